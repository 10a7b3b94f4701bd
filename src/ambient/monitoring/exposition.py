"""Prometheus text exposition as Istio's proxies and istiod serve it.

prometheus-client adds a ``X_created`` series (the creation time) to every counter and
histogram; Istio emits none, and to Prometheus each is one more series per label set.
:func:`disable_created` turns them off for the process (prometheus-client's switch reads a
global at scrape time, so calling it once, before the first scrape, is enough); every
module that defines metrics calls it at import.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics import disable_created_metrics

from ambient.httpd import Response

__all__ = ["disable_created", "render"]


def disable_created() -> None:
    """No ``_created`` series from this process's registries."""
    disable_created_metrics()  # type: ignore[no-untyped-call]


def render(registry: CollectorRegistry, prefix: bytes = b"") -> Response:
    """``registry`` in Prometheus's text format (after ``prefix``, text in the same format),
    as an HTTP response."""
    return Response(200, prefix + generate_latest(registry), CONTENT_TYPE_LATEST)


disable_created()
