"""Talking to an API server: which cluster (``ClusterTarget``), and ``KubeClient``'s requests.

The client is lightkube's (the project's Kubernetes client): its kubeconfig loading
(contexts, client certificates, tokens, exec plugins, in-cluster service accounts)
and its HTTP client (``lightkube.config.client_adapter``, httpx underneath). The
requests are made at that level, on raw JSON: lightkube's typed models and watch
helper are left out because a watch needs bookmarks (``allowWatchBookmarks``) and a
relist on 410 Gone, which its watch does not do, and because at 10,000 pods building
model objects per event costs more than the mesh's own work. Bodies are decoded with
msgspec (what lightkube uses) into plain dicts.

Where the kubeconfig comes from, as kubectl decides: ``--kubeconfig``, else the
first file of ``$KUBECONFIG``, else ``~/.kube/config``, else the pod's service
account (in-cluster). ``--context`` picks a context, else the current one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgspec
from lightkube.config.client_adapter import AsyncClient as adapter_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError

__all__ = [
    "FIELD_MANAGER",
    "ClusterTarget",
    "Forbidden",
    "Gone",
    "KubeClient",
    "KubeError",
    "NotFound",
    "Unreachable",
    "load_config",
]

FIELD_MANAGER = "ambient-controlplane"
# httpx logs every request at INFO: a watching controller would log each re-watch.
logging.getLogger("httpx2").setLevel(logging.WARNING)
IN_CLUSTER_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class KubeError(Exception):
    """A request failed; ``code`` is the HTTP status (None: no answer), ``reason`` the
    API's (``NotFound``, ``Forbidden``, ``Expired``...)."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class Unreachable(KubeError):
    """No answer from the API server (connection refused or lost, timeout)."""


class Gone(KubeError):
    """410: the resourceVersion asked for is no longer available (relist)."""


class Forbidden(KubeError):
    """401 or 403: the credentials may not do this (the RBAC rules of the account)."""


class NotFound(KubeError):
    """404: no such object, or the API server does not serve the kind (CRD missing)."""


def _error(code: int, body: bytes, what: str) -> KubeError:
    message, reason = "", ""
    try:
        status = _decode(body)
        if isinstance(status, dict):
            message, reason = str(status.get("message", "")), str(status.get("reason", ""))
    except msgspec.DecodeError:
        message = body[:200].decode(errors="replace")
    text = f"{what}: {code} {reason or 'error'}: {message}".rstrip(": ")
    if code == 410:
        return Gone(text, code, reason)
    if code in (401, 403):
        return Forbidden(text, code, reason)
    if code == 404:
        return NotFound(text, code, reason)
    return KubeError(text, code, reason)


def status_error(status: Mapping[str, Any], what: str) -> KubeError:
    """The error a watch's ``ERROR`` event (a ``Status`` object) stands for."""
    return _error(int(status.get("code") or 500), _encode(dict(status)), what)


@dataclass(frozen=True)
class ClusterTarget:
    """Which cluster: a kubeconfig file (None: kubectl's defaults) and a context, or
    ``in_cluster``: the pod's own service account only."""

    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False

    def describe(self) -> str:
        if self.in_cluster:
            return f"the in-cluster service account ({IN_CLUSTER_ACCOUNT})"
        where = str(self.kubeconfig) if self.kubeconfig else "the default kubeconfig"
        return f"{where} (context {self.context})" if self.context else where


def _kubeconfig_file(target: ClusterTarget) -> Path | None:
    if target.kubeconfig is not None:
        return target.kubeconfig
    for entry in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if entry and Path(entry).expanduser().is_file():
            return Path(entry).expanduser()
    default = Path("~/.kube/config").expanduser()
    return default if default.is_file() else None


def load_config(target: ClusterTarget) -> SingleConfig:
    """The kubeconfig context to use (see the module docstring); ``KubeError`` if none."""
    path = None if target.in_cluster else _kubeconfig_file(target)
    try:
        if target.in_cluster:
            config = KubeConfig.from_service_account(IN_CLUSTER_ACCOUNT)
        elif path is not None:
            config = KubeConfig.from_file(path)
        elif (IN_CLUSTER_ACCOUNT / "token").is_file():
            config = KubeConfig.from_service_account(IN_CLUSTER_ACCOUNT)
        else:
            raise KubeError(
                "no kubeconfig: give --kubeconfig, set KUBECONFIG, create ~/.kube/config, "
                "or run in a pod with a service account"
            )
        single = config.get(context_name=target.context)
    except (ConfigError, OSError, KeyError, ValueError, TypeError) as err:
        raise KubeError(f"cannot load {path or 'the in-cluster config'}: {err}") from None
    if single is None:
        raise KubeError(f"{path} has no current context: give --context")
    return single


class KubeClient:
    """Requests to one API server, on JSON; every failure is a ``KubeError``."""

    def __init__(
        self,
        config: SingleConfig,
        *,
        timeout: float = 30.0,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        params = ConnectionParams(timeout=httpx.Timeout(timeout), trust_env=False)
        self.config = config
        self.field_manager = field_manager
        self.http: httpx.AsyncClient = adapter_client(config, params)

    @property
    def server(self) -> str:
        return str(self.http.base_url)

    async def close(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Any:
        """One request; the decoded JSON answer (None if empty)."""
        what = f"{method} {path}"
        headers = {"Accept": accept}
        content = None
        if body is not None:
            content = _encode(body)
            headers["Content-Type"] = content_type
        try:
            response = await self.http.request(
                method, path, params=dict(params or {}), content=content, headers=headers
            )
        except httpx.HTTPError as err:
            message = f"{what}: cannot reach the API server at {self.server}: {err!r}"
            raise Unreachable(message) from None
        if response.status_code >= 400:
            raise _error(response.status_code, response.content, what)
        return _decode(response.content) if response.content else None

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def list(
        self, path: str, params: Mapping[str, str] | None = None, *, page: int = 500
    ) -> tuple[list[dict[str, Any]], str]:
        """Every item (fetched in pages of ``page``) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        query = {**(params or {}), "limit": str(page)}
        while True:
            answer = await self.get(path, query)
            items += answer.get("items") or []
            meta = answer.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion", ""))
            query["continue"] = token

    async def watch(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        read_timeout: float,
        opened: Callable[[], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request, until the server ends it (``KubeError`` on
        failure; a ``Gone`` for an expired resourceVersion). ``opened`` is called once the
        server has accepted the watch (its answer's head), before any event."""
        what = f"watch {path}"
        query = {**params, "watch": "true"}
        timeout = httpx.Timeout(self.http.timeout.connect, read=read_timeout)
        try:
            async with self.http.stream("GET", path, params=query, timeout=timeout) as response:
                if response.status_code >= 400:
                    raise _error(response.status_code, await response.aread(), what)
                if opened is not None:
                    opened()
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    event = _decode(line)
                    if event.get("type") == "ERROR":
                        raise status_error(event.get("object") or {}, what)
                    yield event
        except httpx.HTTPError as err:
            raise Unreachable(f"{what}: {err!r}") from None
        except msgspec.DecodeError as err:
            raise KubeError(f"{what}: undecodable event: {err}") from None

    async def apply(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        force: bool = True,
    ) -> Any:
        """Server-side apply of ``body`` under this client's field manager."""
        params = {"fieldManager": self.field_manager, "force": "true" if force else "false"}
        return await self.request(
            "PATCH", path, params=params, body=body, content_type="application/apply-patch+yaml"
        )

    async def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("POST", path, body=body)

    async def patch(
        self, path: str, body: Mapping[str, Any], content_type: str = "application/merge-patch+json"
    ) -> Any:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return await self.request("DELETE", path, body=body)
