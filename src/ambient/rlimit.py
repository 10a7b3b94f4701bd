"""The process's file-descriptor limit, raised at start as Envoy and Istio's ztunnel do.

Every tunnel costs a proxy two descriptors (the HBONE connection's share and
the application's connection), so the usual soft limit of 1,024 is reached
by a few hundred busy clients, and a proxy that cannot accept is down for
everyone. The hard limit is the administrator's ceiling; the soft limit is
only a default, so it is raised to the hard limit. Child processes inherit
the raised limit.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("ambient")


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or (hard != resource.RLIM_INFINITY and soft > hard):
        return soft
    target = hard
    if hard == resource.RLIM_INFINITY:  # Linux refuses infinity here: take the kernel's ceiling
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    log.debug("open-files limit raised from %d to %d", soft, target)
    return target
