"""A ztunnel's CA token by TokenRequest: ``TokenRequestSource`` (a ``TokenSource``).

``ambient ztunnel --kubeconfig K`` (or ``--in-cluster``) asks the API server for a
token of its own ServiceAccount (``istio-system/ztunnel``) bound to its own pod,
audience ``istio-ca``, valid 12 h — what the kubelet would project into the pod
for Istio's ztunnel (``/var/run/secrets/tokens/istio-token``). The request is
``POST /api/v1/namespaces/NS/serviceaccounts/SA/token`` with ``boundObjectRef``
kind Pod, name and (if known) uid; the API server refuses it unless that pod exists
and runs as that ServiceAccount, and the token dies with the pod.

It authenticates with whatever the kubeconfig holds — in a pod, the pod's own
projected API token. ``ambient install`` lets the ``ztunnel`` account create tokens
for itself only (Role ``ambient-ztunnel``), and its ValidatingAdmissionPolicy
``ambient-ztunnel-token-binding`` lets it bind them only to the pod its own
credentials are bound to: a ztunnel cannot mint a token for another node's ztunnel
pod (``docs/security.md``).

Renewal follows the kubelet's rule for projected tokens: a token older than 80 % of
its lifetime is replaced, at the next call. If the renewal fails while the current
token is still valid, the current one is used (and the failure logged); once it
has expired, calls fail with ``TokenError`` until a renewal succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ambient.identity.tokensource import CA_AUDIENCE, TokenError, check_token
from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import SERVICE_ACCOUNT

__all__ = ["DEFAULT_EXPIRATION", "RENEW_AT", "TokenRequestSource"]

log = logging.getLogger("ambient.kube")

DEFAULT_EXPIRATION = timedelta(hours=12)  # Istio's projected istio-token
RENEW_AT = 0.8  # of the token's lifetime, as the kubelet renews projected tokens
MIN_EXPIRATION = timedelta(minutes=10)  # the API server's minimum for TokenRequest


class TokenRequestSource:
    """Tokens of ``namespace/service_account`` bound to pod ``pod_name`` (see the module)."""

    def __init__(
        self,
        client: KubeClient,
        *,
        pod_name: str,
        pod_uid: str | None = None,
        namespace: str = "istio-system",
        service_account: str = "ztunnel",
        audience: str = CA_AUDIENCE,
        expiration: timedelta = DEFAULT_EXPIRATION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if expiration < MIN_EXPIRATION:
            raise ValueError(f"token expiration must be at least 10 minutes, got {expiration}")
        if not pod_name:
            raise ValueError("the ztunnel's pod name is needed to bind its token (--pod-name)")
        self.client = client
        self.pod_name = pod_name
        self.pod_uid = pod_uid or None
        self.namespace = namespace
        self.service_account = service_account
        self.audience = audience
        self.expiration = expiration
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._issued = 0.0
        self._expires = 0.0
        self.requests = 0  # TokenRequests made (tests, status)

    def describe(self) -> str:
        return (
            f"TokenRequest for {self.namespace}/{self.service_account} bound to pod "
            f"{self.namespace}/{self.pod_name}"
        )

    @property
    def expires(self) -> float:
        """When the current token expires (epoch seconds; 0 before the first request)."""
        return self._expires

    def _due(self, now: float) -> bool:
        return self._token is None or now >= self._issued + RENEW_AT * (
            self._expires - self._issued
        )

    async def token(self) -> str:
        if not self._due(self._clock()):
            assert self._token is not None
            return self._token
        async with self._lock:
            now = self._clock()
            if not self._due(now):  # renewed while we waited
                assert self._token is not None
                return self._token
            try:
                await self.renew()
            except TokenError as err:
                if self._token is None or now >= self._expires:
                    raise
                log.warning(
                    "renewing the ztunnel's token failed; using the current one (expires in "
                    "%.0f s): %s",
                    self._expires - now,
                    err,
                )
            assert self._token is not None
            return self._token

    async def renew(self) -> str:
        """Request a new token now (whether or not the current one is due)."""
        ref: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name}
        if self.pod_uid:
            ref["uid"] = self.pod_uid
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [self.audience],
                "expirationSeconds": int(self.expiration.total_seconds()),
                "boundObjectRef": ref,
            },
        }
        path = SERVICE_ACCOUNT.path(self.namespace, self.service_account, "token")
        issued = self._clock()
        self.requests += 1
        try:
            answer = await self.client.create(path, body)
        except KubeError as err:
            raise TokenError(f"{self.describe()} refused: {err}") from None
        status = (answer or {}).get("status") if isinstance(answer, dict) else None
        if not isinstance(status, dict):
            raise TokenError(f"{self.describe()}: the API server answered without a status")
        token = check_token(str(status.get("token") or ""), self.describe())
        expires = _timestamp(status.get("expirationTimestamp"), self.describe())
        if expires <= issued:
            raise TokenError(f"{self.describe()}: the API server returned an expired token")
        self._token, self._issued, self._expires = token, issued, expires
        log.info(
            "got a token for %s/%s bound to pod %s (audience %s, valid for %.0f s)",
            self.namespace,
            self.service_account,
            self.pod_name,
            self.audience,
            expires - issued,
        )
        return token


def _timestamp(value: object, what: str) -> float:
    if not isinstance(value, str):
        raise TokenError(f"{what}: the answer has no expirationTimestamp")
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise TokenError(f"{what}: bad expirationTimestamp {value[:40]!r}") from None
