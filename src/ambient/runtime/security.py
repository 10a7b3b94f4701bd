"""Which user a pod's container runs as, and what the mesh hides from it.

A pod must not read the mesh's private keys (CA, node, workload) nor reach its
control sockets. What the runtime does depends on what the host allows (the
launcher's ``hello``, :class:`~ambient.launcher.client.HostInfo`):

- ``ambient up`` as **root**: a container runs as its ``securityContext``
  user, merged as kubelet does (the container's ``runAsUser``/``runAsGroup``/
  ``runAsNonRoot`` win over the pod's; ``supplementalGroups`` from the pod).
  Without ``runAsUser`` it runs as **65534** (``nobody``): a uid every Linux has
  and that owns no file, so the pod can read only what is readable by all; a
  manifest that needs another uid says so, as on Kubernetes. Without
  ``runAsGroup`` the group is the user's primary group in the host's
  ``/etc/passwd`` (the host is the image here), else 65534 (Kubernetes would
  fall back to 0; the host's root group is not a safe default). ``runAsUser:
  0`` runs as root *in a user namespace* and as 65534 on the host (Kubernetes'
  ``hostUsers: false``); where the kernel refuses that, the container is not
  started (CreateContainerConfigError) rather than run as the host's root.
- ``ambient up`` as **another user**, where unprivileged user namespaces work:
  every container runs as that user on the host (nothing else is possible)
  and sees the ``runAsUser``/``runAsGroup`` it asked for (default: the same
  ids) inside a user namespace; supplementary groups cannot be set there.
- Neither: containers run as the mesh's user and *can* read its keys; only
  the mesh's own ids can be honoured (anything else is a
  CreateContainerConfigError), and start-up and ``ambient status`` say so.

A container with ``securityContext.privileged: true`` is what Kubernetes says
it is, equivalent to root on the host: it runs as the mesh itself (``runAsUser``
still chooses another uid, 0 included, without a user namespace), with the
mesh's folders hidden but nothing to stop it from unmounting them; start-up
logs a warning for each. Tests use it to run the test runner's own
interpreter; manifests should not need it.

In the first two cases the mesh's folders (the state folder, the private
socket folder, the plug-in CA folder) are covered by an empty read-only tmpfs
in the container's mount namespace (``ambient.launcher.sandbox``). With
``runAsNonRoot: true`` and an effective uid of 0 the container is not started,
with kubelet's message. ``HOME`` is the user's home in ``/etc/passwd`` (``/``
if it has none), as container runtimes set it from the image's.
"""

from __future__ import annotations

import pwd
from dataclasses import dataclass
from pathlib import Path

from ambient.config.resources import Container, SecurityContext
from ambient.launcher.client import HostInfo
from ambient.launcher.sandbox import NOBODY
from ambient.runtime.spec import PodRun, RunAs

__all__ = [
    "DEFAULT_POD_UID",
    "ContainerConfigError",
    "Isolation",
    "RunAs",
    "effective_security_context",
    "isolation_report",
    "run_as",
]

DEFAULT_POD_UID = NOBODY
"""The uid of a pod without ``runAsUser`` when ``ambient up`` runs as root."""


class ContainerConfigError(Exception):
    """A container that cannot be started as configured (kubelet's CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


@dataclass(frozen=True)
class Isolation:
    """What a pods' runtime hides: folders pods must not see (covered when the host allows)."""

    hide: tuple[Path, ...] = ()

    @classmethod
    def of(cls, *paths: Path) -> Isolation:
        """``paths`` resolved, each once (a folder that does not exist when a container
        starts is skipped then)."""
        seen: list[Path] = []
        for path in paths:
            path = Path(path).resolve()
            if path not in seen:
                seen.append(path)
        return cls(tuple(seen))

    def existing(self) -> tuple[Path, ...]:
        """The folders of :attr:`hide` that exist now (a mount needs its target)."""
        return tuple(path for path in self.hide if path.is_dir())


def effective_security_context(pod: PodRun, container: Container) -> SecurityContext:
    """The pod's and the container's ``securityContext`` merged: the container's fields win."""
    pod_sc = pod.security_context or SecurityContext()
    own = container.security_context or SecurityContext()
    return SecurityContext(
        privileged=own.privileged,
        run_as_user=own.run_as_user if own.run_as_user is not None else pod_sc.run_as_user,
        run_as_group=own.run_as_group if own.run_as_group is not None else pod_sc.run_as_group,
        run_as_non_root=(
            own.run_as_non_root if own.run_as_non_root is not None else pod_sc.run_as_non_root
        ),
        supplemental_groups=pod_sc.supplemental_groups,
    )


def _passwd(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def _primary_gid(uid: int) -> int:
    entry = _passwd(uid)
    return entry.pw_gid if entry is not None else NOBODY


def _home(uid: int) -> str:
    entry = _passwd(uid)
    return entry.pw_dir if entry is not None else "/"


def run_as(pod: PodRun, container: Container, host: HostInfo) -> RunAs:
    """The user ``container`` of ``pod`` runs as on ``host`` (see the module docs);
    ContainerConfigError if that cannot be done safely or breaks ``runAsNonRoot``."""
    sc = effective_security_context(pod, container)
    if sc.privileged:
        uid = sc.run_as_user if sc.run_as_user is not None else host.uid
        gid = sc.run_as_group if sc.run_as_group is not None else host.gid
        if not host.privileged and (uid, gid) != (host.uid, host.gid):
            raise ContainerConfigError(
                f"container {container.name!r} is privileged and asks for uid {uid} gid {gid}: "
                f"`ambient up` runs as uid {host.uid}, not as root, and can only run it as itself"
            )
        groups = sc.supplemental_groups if host.privileged else ()
        result = RunAs(uid, gid, uid, gid, groups, _home(uid))
    elif host.privileged:
        uid = sc.run_as_user if sc.run_as_user is not None else DEFAULT_POD_UID
        gid = sc.run_as_group if sc.run_as_group is not None else _primary_gid(uid)
        if uid == 0:
            if not host.userns:
                raise ContainerConfigError(
                    f"container {container.name!r} asks for runAsUser 0, which runs as root only "
                    "in a user namespace here, and this host refuses user namespaces "
                    f"({host.userns_error}); use a non-zero runAsUser"
                )
            result = RunAs(uid, gid, NOBODY, NOBODY, (), _home(0))
        else:
            result = RunAs(uid, gid, uid, gid, sc.supplemental_groups, _home(uid))
    elif host.userns:
        uid = sc.run_as_user if sc.run_as_user is not None else host.uid
        gid = sc.run_as_group if sc.run_as_group is not None else host.gid
        result = RunAs(uid, gid, host.uid, host.gid, (), _home(uid))
    else:
        for field, wanted, have in (
            ("runAsUser", sc.run_as_user, host.uid),
            ("runAsGroup", sc.run_as_group, host.gid),
        ):
            if wanted is not None and wanted != have:
                raise ContainerConfigError(
                    f"container {container.name!r} asks for {field} {wanted}: `ambient up` runs "
                    f"as uid {host.uid} gid {host.gid}, not as root, and this host refuses user "
                    f"namespaces ({host.userns_error}), so it can only run containers as itself"
                )
        result = RunAs(host.uid, host.gid, host.uid, host.gid, (), _home(host.uid))
    if sc.run_as_non_root and result.uid == 0:
        where = f'(pod: "{pod.name}_{pod.namespace}({pod.uid})", container: {container.name})'
        if sc.run_as_user is None:  # kubelet's words when the image's user is root
            raise ContainerConfigError(
                f"container has runAsNonRoot and image will run as root {where}"
            )
        raise ContainerConfigError(f"container's runAsUser breaks non-root policy {where}")
    return result


def isolation_report(host: HostInfo) -> tuple[bool, str]:
    """Whether pods are kept from the mesh's keys and sockets here, and one line saying how."""
    if host.privileged:
        root = (
            "runAsUser 0 means root in a user namespace only"
            if host.userns
            else f"runAsUser 0 is refused (no user namespaces: {host.userns_error})"
        )
        return True, (
            f"pods run as uid {DEFAULT_POD_UID} unless their securityContext says otherwise "
            f"({root}); the mesh's folders are hidden from them"
        )
    if host.userns:
        return True, (
            f"`ambient up` is not root: pods run as its uid {host.uid} on the host, in user "
            "namespaces where the mesh's folders are hidden; they can still signal the mesh's "
            "processes (same uid)"
        )
    return False, (
        f"pods run as this user (uid {host.uid}) and CAN READ THE MESH'S KEYS and reach its "
        "control sockets: `ambient up` is not root and this host refuses unprivileged user "
        f"namespaces ({host.userns_error}); run `ambient up` as root, or allow user "
        "namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces)"
    )
