"""A workload's SPIFFE id as text, kept per (trust domain, namespace, service account).

Every proxied connection names its source and destination identities (CONNECT
peer checks, metrics labels, the access log); building and validating the id
and printing its URI cost a few µs each time. The text of a valid id is kept
(bounded); an invalid one raises as ``Workload.identity`` does, every time.
"""

from __future__ import annotations

from ambient.state.workload import Workload

__all__ = ["identity_text"]

MAX_KEPT = 4096
_TEXT: dict[tuple[str, str, str], str] = {}


def identity_text(workload: Workload) -> str:
    """``str(workload.identity)``."""
    key = (workload.trust_domain, workload.namespace, workload.service_account)
    text = _TEXT.get(key)
    if text is None:
        text = str(workload.identity)
        if len(_TEXT) < MAX_KEPT:
            _TEXT[key] = text
    return text
