"""Checking a ztunnel's token with the API server: ``TokenReviewer`` (TokenReview).

As istiod's CA (``security/pkg/k8s/tokenreview``): ``POST
/apis/authentication.k8s.io/v1/tokenreviews`` with the token and the audience
``istio-ca``, by the control plane's own ServiceAccount (``ambient install`` grants
``istiod`` ``create`` on ``tokenreviews``). A token is accepted only if the API
server says ``authenticated``, names no ``error``, lists ``istio-ca`` among the
audiences it checked (an audience-unaware authenticator would return none), and
the user is a ServiceAccount (group ``system:serviceaccounts``, username
``system:serviceaccount:NS:NAME``). What comes back (:class:`ReviewedToken`) is the
account and, for a pod-bound token, the pod's name and uid from the user's extras
(``authentication.kubernetes.io/pod-name``, ``pod-uid``).

**Cache.** A successful review is remembered for :data:`SUCCESS_TTL` (30 s), keyed
by the token's SHA-256, never past the token's own ``exp`` (read from its payload
once the API server vouched for its signature), at most :data:`MAX_ENTRIES` tokens.
Why: a ztunnel presents the same token for every certificate of its node and for
xDS, and a node starting many pods (or reconnecting) asks for many at once — one
review serves the burst; concurrent reviews of one token share one request. Why
that short: the CA checks the token's pod against its informer cache on *every*
request anyway (a deleted or recreated pod is refused at once), so what the cache
can delay is only what the API server alone knows — a deleted ServiceAccount, a
revoked credential — and the API server caches successful authentications for
10 s itself. Refusals are not cached: a token that fails is reviewed again next
time (it may be valid by then, e.g. after the reviewer's RBAC is fixed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ambient.identity.tokensource import CA_AUDIENCE
from ambient.kube.api import Forbidden, KubeClient, KubeError, Unreachable

__all__ = [
    "EXTRA_POD_NAME",
    "EXTRA_POD_UID",
    "MAX_ENTRIES",
    "SUCCESS_TTL",
    "ReviewFailed",
    "ReviewedToken",
    "TokenRejected",
    "TokenReviewer",
    "parse_review",
    "token_expiry",
]

log = logging.getLogger("ambient.kube")

SUCCESS_TTL = 30.0
MAX_ENTRIES = 4096
EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
_SA_GROUP = "system:serviceaccounts"
_SA_PREFIX = "system:serviceaccount:"


class TokenRejected(Exception):
    """The API server does not vouch for the token (invalid, expired, wrong audience...)."""


class ReviewFailed(Exception):
    """The token could not be reviewed: the API server is unreachable or refused the review.

    ``unavailable`` is True when retrying later may succeed without any change here.
    """

    def __init__(self, message: str, *, unavailable: bool) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class ReviewedToken:
    """What a successful review says about a token's holder."""

    namespace: str
    service_account: str
    pod_name: str | None = None
    pod_uid: str | None = None
    node_name: str | None = None  # the node the pod was on when the token was made
    expires: float | None = None  # the token's exp claim (epoch seconds), if any

    @property
    def account(self) -> str:
        return f"{self.namespace}/{self.service_account}"


def _single(extra: Mapping[str, Any], key: str) -> str | None:
    values = extra.get(key)
    if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str):
        return values[0] or None
    return None


def parse_review(status: Mapping[str, Any], audience: str) -> ReviewedToken:
    """The holder of a reviewed token from the review's ``status``; TokenRejected if refused."""
    error = status.get("error")
    if error:
        raise TokenRejected(f"the API server rejected the token: {str(error)[:300]}")
    if status.get("authenticated") is not True:
        raise TokenRejected("the API server did not authenticate the token")
    audiences = status.get("audiences")
    if not isinstance(audiences, list) or audience not in audiences:
        raise TokenRejected(
            f"the token review did not confirm the audience {audience!r} "
            f"(got {audiences!r}): the token is not meant for this CA"
        )
    user = status.get("user")
    if not isinstance(user, Mapping):
        raise TokenRejected("the token review names no user")
    groups = user.get("groups")
    username = user.get("username")
    if not isinstance(groups, list) or _SA_GROUP not in groups or not isinstance(username, str):
        raise TokenRejected(f"the token is not a service account's (user {username!r})")
    parts = username.split(":")
    if len(parts) != 4 or not username.startswith(_SA_PREFIX) or not parts[2] or not parts[3]:
        raise TokenRejected(f"the token's user {username!r} is not a service account's")
    extra = user.get("extra")
    extra = extra if isinstance(extra, Mapping) else {}
    return ReviewedToken(
        parts[2],
        parts[3],
        _single(extra, EXTRA_POD_NAME),
        _single(extra, EXTRA_POD_UID),
        _single(extra, EXTRA_NODE_NAME),
    )


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT's payload, unverified (trust it only after a review)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


class TokenReviewer:
    """Reviews tokens for ``audience`` through ``client`` (see the module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        *,
        audience: str = CA_AUDIENCE,
        cache_ttl: float = SUCCESS_TTL,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.audience = audience
        self.cache_ttl = cache_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[ReviewedToken, float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[ReviewedToken]] = {}
        self.reviews = 0  # TokenReviews sent to the API server

    async def review(self, token: str) -> ReviewedToken:
        """The holder of ``token``; TokenRejected or ReviewFailed if it cannot be trusted."""
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            if self._clock() < cached[1]:
                return cached[0]
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._review(key, token))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[ReviewedToken]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have been cancelled

    async def _review(self, key: str, token: str) -> ReviewedToken:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        self.reviews += 1
        try:
            answer = await self.client.create(TOKEN_REVIEWS, body)
        except Forbidden as err:
            raise ReviewFailed(
                f"the control plane may not review tokens ({err}): its ClusterRole needs "
                "'create' on tokenreviews.authentication.k8s.io (ambient install grants it)",
                unavailable=False,
            ) from None
        except Unreachable as err:
            raise ReviewFailed(f"cannot review the token: {err}", unavailable=True) from None
        except KubeError as err:
            retry = err.code is None or err.code >= 500 or err.code == 429
            raise ReviewFailed(f"cannot review the token: {err}", unavailable=retry) from None
        status = answer.get("status") if isinstance(answer, dict) else None
        reviewed = parse_review(status if isinstance(status, Mapping) else {}, self.audience)
        expires = token_expiry(token)
        reviewed = ReviewedToken(
            reviewed.namespace,
            reviewed.service_account,
            reviewed.pod_name,
            reviewed.pod_uid,
            reviewed.node_name,
            expires,
        )
        until = self._clock() + self.cache_ttl
        if expires is not None:
            until = min(until, expires)
        if self.cache_ttl > 0 and until > self._clock():
            self._cache[key] = (reviewed, until)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return reviewed
