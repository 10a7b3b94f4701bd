"""Identity from Kubernetes: which node a token speaks for, and which identities it may get.

``KubeNodeAuth`` is the cluster mode's authenticator and authorizer for the CA and
for xDS, as istiod's ``KubeJWTAuthenticator`` with its ``NodeAuthorizer``
(``security/pkg/server/ca/node_auth.go``):

1. :meth:`KubeNodeAuth.verify` — the bearer token is reviewed (``TokenReviewer``,
   audience ``istio-ca``); its account must be a *trusted node account*
   (``CA_TRUSTED_NODE_ACCOUNTS``, default ``istio-system/ztunnel``, as istiod's);
   the token must be bound to a pod (the review's pod-name/pod-uid extras); that pod
   must exist with that uid and that ServiceAccount — asked of the controller's
   informer cache (``PodLookup``), with a GET of the pod when the cache does not
   confirm it (not there yet, or another uid) — and be bound to a node. That node is
   the caller's. Refusals: an untrusted account is PERMISSION_DENIED (a genuine
   account that may not speak for nodes); anything else UNAUTHENTICATED, with the
   reason.
2. :meth:`KubeNodeAuth.authorize` — the caller's node may obtain a certificate for
   ``spiffe://<td>/ns/NS/sa/SA`` only if a pod of ServiceAccount ``NS/SA`` is bound to
   that node (``spec.nodeName``), whatever its phase, as istiod's node+SA index; the
   trust domain must be the CA's. The cache answers; when it has no such pod, one
   LIST of that account's pods on that node (field selectors ``spec.serviceAccountName``
   and ``spec.nodeName``) settles
   it, so a pod bound a moment ago is not refused while the cache catches up; a
   refusal lists that account's pods once more to name the nodes they run on.

Decisions: a pod being deleted (``deletionTimestamp`` set) still counts, as in Istio
(a draining ztunnel renews its pods' certificates); the token's
``authentication.kubernetes.io/node-name`` extra is not trusted for the node, the
bound pod's ``spec.nodeName`` is (the brief; both agree for a token of a bound pod).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from ambient.controlplane.source import NotAuthorized
from ambient.identity.callers import AuthUnavailable, Caller, Unauthenticated
from ambient.identity.spiffe import SpiffeId
from ambient.kube.api import KubeClient, KubeError, NotFound, Unreachable
from ambient.kube.cache import PodInfo, PodLookup, pod_info
from ambient.kube.kinds import POD
from ambient.kube.tokenreview import ReviewFailed, TokenRejected, TokenReviewer

__all__ = [
    "DEFAULT_TRUSTED_NODE_ACCOUNTS",
    "TRUSTED_NODE_ACCOUNTS_ENV",
    "KubeNodeAuth",
    "trusted_node_accounts",
]

log = logging.getLogger("ambient.kube")

TRUSTED_NODE_ACCOUNTS_ENV = "CA_TRUSTED_NODE_ACCOUNTS"  # istiod's variable
DEFAULT_TRUSTED_NODE_ACCOUNTS = frozenset({("istio-system", "ztunnel")})
_LIST_LIMIT = "20"  # pods listed to name where an account runs, in a refusal


def trusted_node_accounts(text: str | None = None) -> frozenset[tuple[str, str]]:
    """Accounts allowed to speak for nodes: ``ns/sa`` entries separated by commas.

    ``text`` None reads ``$CA_TRUSTED_NODE_ACCOUNTS``; unset or blank, istiod's default.
    A malformed entry is a ValueError naming it (the control plane does not start).
    """
    if text is None:
        text = os.environ.get(TRUSTED_NODE_ACCOUNTS_ENV, "")
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if not entries:
        return DEFAULT_TRUSTED_NODE_ACCOUNTS
    accounts = set()
    for entry in entries:
        namespace, slash, name = entry.partition("/")
        if not slash or not namespace or not name or "/" in name:
            raise ValueError(
                f"{TRUSTED_NODE_ACCOUNTS_ENV}: {entry[:80]!r} is not NAMESPACE/SERVICEACCOUNT"
            )
        accounts.add((namespace, name))
    return frozenset(accounts)


class KubeNodeAuth:
    """Authenticates ztunnel tokens and authorizes their node (see the module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        pods: PodLookup,
        *,
        trust_domain: str,
        reviewer: TokenReviewer | None = None,
        trusted: Iterable[tuple[str, str]] = DEFAULT_TRUSTED_NODE_ACCOUNTS,
    ) -> None:
        self.client = client
        self.pods = pods
        self.trust_domain = trust_domain
        self.reviewer = reviewer or TokenReviewer(client)
        self.trusted = frozenset(trusted)
        self.pod_gets = 0  # GETs made because the cache did not confirm a caller's pod
        self.pod_lists = 0  # LISTs made because the cache had no pod of an identity

    def describe(self) -> str:
        accounts = ", ".join(sorted(f"{ns}/{sa}" for ns, sa in self.trusted))
        return f"Kubernetes service-account tokens (audience istio-ca; node accounts {accounts})"

    async def verify(self, token: str) -> Caller:
        """The node ``token`` speaks for; Unauthenticated, NotAuthorized or AuthUnavailable."""
        try:
            reviewed = await self.reviewer.review(token)
        except TokenRejected as err:
            raise Unauthenticated(str(err)) from None
        except ReviewFailed as err:
            if err.unavailable:
                raise AuthUnavailable(str(err)) from None
            raise Unauthenticated(str(err)) from None
        account = reviewed.account
        if (reviewed.namespace, reviewed.service_account) not in self.trusted:
            raise NotAuthorized(
                f"the token is of ServiceAccount {account}, which is not a trusted node "
                f"account ({', '.join(sorted(f'{n}/{s}' for n, s in self.trusted))}; "
                f"${TRUSTED_NODE_ACCOUNTS_ENV})"
            )
        if reviewed.pod_name is None or reviewed.pod_uid is None:
            raise Unauthenticated(
                f"the token of {account} is not bound to a pod: use a token bound to the "
                "ztunnel's pod (TokenRequest with boundObjectRef, or the projected istio-token)"
            )
        pod = await self._caller_pod(reviewed.namespace, reviewed.pod_name, reviewed.pod_uid)
        where = f"pod {pod.namespace}/{pod.name}"
        if pod.service_account != reviewed.service_account:
            raise Unauthenticated(
                f"{where} runs as {pod.namespace}/{pod.service_account}, not {account}"
            )
        if not pod.node:
            raise Unauthenticated(f"the token's {where} is not scheduled on a node")
        return Caller(pod.node, f"{where}, {account}")

    async def _caller_pod(self, namespace: str, name: str, uid: str) -> PodInfo:
        cached = self.pods.pod(namespace, name)
        pod = cached
        if cached is None or cached.uid != uid:  # the cache may lag: ask the API server
            self.pod_gets += 1
            try:
                pod = pod_info(await self.client.get(POD.path(namespace, name)))
            except NotFound:
                pod = None
            except (Unreachable, KubeError) as err:
                raise AuthUnavailable(
                    f"cannot check the token's pod {namespace}/{name}: {err}"
                ) from None
        if pod is None:
            raise Unauthenticated(
                f"the token is bound to pod {namespace}/{name}, which no longer exists"
            )
        if pod.uid != uid:
            raise Unauthenticated(
                f"the token is bound to pod {namespace}/{name} with uid {uid}, but that pod "
                f"now has uid {pod.uid} (it was recreated: get a new token)"
            )
        return pod

    async def authorize(self, node: str, identity: SpiffeId) -> None:
        """Raise NotAuthorized unless a pod of ``identity``'s ServiceAccount is on ``node``."""
        prefix = f"node {node} may not obtain a certificate for {identity}"
        if identity.trust_domain != self.trust_domain:
            raise NotAuthorized(
                f"{prefix}: its trust domain is not the mesh's ({self.trust_domain})"
            )
        namespace, account = identity.namespace, identity.service_account
        if self.pods.pods_of(namespace, account, node):
            return
        self.pod_lists += 1
        selector = f"spec.serviceAccountName={account},spec.nodeName={node}"
        if await self._nodes_of(namespace, selector, "1", prefix):
            return
        selector = f"spec.serviceAccountName={account}"
        elsewhere = await self._nodes_of(namespace, selector, _LIST_LIMIT, prefix)
        where = f"its pods run on {', '.join(sorted(elsewhere))}" if elsewhere else "it has none"
        raise NotAuthorized(
            f"{prefix}: no pod of ServiceAccount {namespace}/{account} is scheduled on "
            f"{node} ({where})"
        )

    async def _nodes_of(self, namespace: str, selector: str, limit: str, prefix: str) -> set[str]:
        """The nodes of the pods ``selector`` picks in ``namespace`` (one page of ``limit``)."""
        params = {"fieldSelector": selector, "limit": limit}
        try:
            answer: Any = await self.client.get(POD.path(namespace), params)
        except (Unreachable, KubeError) as err:
            raise AuthUnavailable(f"{prefix}: cannot list its pods: {err}") from None
        items = answer.get("items") if isinstance(answer, dict) else None
        return {info.node for info in map(pod_info, items or ()) if info.node}
