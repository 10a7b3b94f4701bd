"""The two token clients against the real API server: ``TokenReviewer`` (its short cache,
bounded by the token's expiry; refusals never cached; one request for concurrent reviews)
and ``TokenRequestSource`` (renewal at 80 %, the current token kept while a renewal fails,
an error once it has expired)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ambient.devcluster import DevCluster
from ambient.identity.tokensource import TokenError
from ambient.kube.api import ClusterTarget, KubeClient, load_config
from ambient.kube.tokenreview import SUCCESS_TTL, TokenRejected, TokenReviewer, token_expiry
from tests.kube.kubelet import KubeletStandIn
from tests.kube.ztunnel_pods import ZtunnelPods

pytestmark = [pytest.mark.slow, pytest.mark.kube]


@pytest.fixture
async def ztunnels(
    admin: KubeClient, installed: DevCluster, tmp_path: Path
) -> AsyncIterator[ZtunnelPods]:
    pods = ZtunnelPods(admin, installed.kubeconfig, tmp_path)
    yield pods
    await pods.close()


@pytest.fixture
async def istiod(sa_kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_config(ClusterTarget(sa_kubeconfig)))
    yield client
    await client.close()


async def test_reviews_are_cached_briefly_and_never_past_the_token(
    istiod: KubeClient, kubelet: KubeletStandIn, ztunnels: ZtunnelPods
) -> None:
    await kubelet.register("tr-1", "192.168.75.1")
    z1 = await ztunnels.start("tr-1")
    token = await z1.token_source().token()
    now = [time.time()]
    reviewer = TokenReviewer(istiod, clock=lambda: now[0])

    first = await reviewer.review(token)
    assert (first.namespace, first.service_account, first.pod_name) == (
        "istio-system",
        "ztunnel",
        z1.name,
    )
    assert first.expires == token_expiry(token) and reviewer.reviews == 1
    assert await reviewer.review(token) == first and reviewer.reviews == 1  # cached
    now[0] += SUCCESS_TTL + 1
    await reviewer.review(token)
    assert reviewer.reviews == 2  # reviewed again once the cache time is over

    # Concurrent reviews of a new token share one request.
    other = await z1.token_source().renew()
    results = await asyncio.gather(*(reviewer.review(other) for _ in range(10)))
    assert len(set(results)) == 1 and reviewer.reviews == 3

    # Never cached past the token's own expiry: 5 s before it, the entry lives 5 s.
    expires = token_expiry(token)
    assert expires is not None
    now[0] = expires - 5
    await reviewer.review(token)
    assert reviewer.reviews == 4
    now[0] = expires - 1
    await reviewer.review(token)
    assert reviewer.reviews == 4
    now[0] = expires + 1  # (the API server's clock still accepts it: it asks again)
    await reviewer.review(token)
    assert reviewer.reviews == 5

    # Refusals are not cached.
    for _ in range(2):
        with pytest.raises(TokenRejected):
            await reviewer.review("not-a-token")
    assert reviewer.reviews == 7


async def test_a_failed_renewal_keeps_the_current_token_until_it_expires(
    kubelet: KubeletStandIn, ztunnels: ZtunnelPods
) -> None:
    await kubelet.register("tq-1", "192.168.75.2")
    z1 = await ztunnels.start("tq-1")
    ahead = [0.0]
    source = z1.token_source(clock=lambda: time.time() + ahead[0])
    token = await source.token()
    assert source.requests == 1
    await ztunnels.stop(z1)  # now no TokenRequest bound to it can succeed

    ahead[0] = 0.9 * 12 * 3600  # past the renewal point, before the expiry
    assert await source.token() == token  # the renewal failed (logged): the current one
    assert source.requests == 2
    ahead[0] = source.expires - time.time() + 1  # expired
    with pytest.raises(TokenError, match=f'pods "{z1.name}" not found'):
        await source.token()
