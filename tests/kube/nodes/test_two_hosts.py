"""Two hosts, one mesh: ``ambient up --kubeconfig K --nodes node-3 --control-plane A:15012``.

Two network namespaces stand for two machines on one LAN (``tests.kube.hosts``):

- host A (10.254.0.1) runs the dev cluster (its API server on 10.254.0.1) and
  ``ambient up --kubeconfig K --nodes node-1`` (the control plane and node-1);
- host B (10.254.0.2) runs ``ambient up --kubeconfig K --nodes node-3
  --control-plane 10.254.0.1:15012`` (node-3 only).

Each host's nftables (``table inet hostfw``) lets in from the LAN only what this
mesh needs between machines — the API server and the control plane's 15012/15010
on A, 15008 (HBONE) on both — and counts what it drops. A pod on node-3 calls a pod
on node-1 by its Service's name: the app sees the caller's SPIFFE identity, the
packets to 15008 are counted on A, and nothing was dropped (no plain TCP between
the hosts was even tried).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator

import pytest

from tests.e2e.manifests import manifest, namespace, pod, python, service, service_account
from tests.kube.hosts import Lan, NetnsCluster, NetnsHost
from tests.kube.nodes.test_up import APP, Up, _ready, wait_for
from tests.netns.conftest import netns_unavailable

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.root]


def firewall(allowed_ports: list[int]) -> str:
    rules = "\n".join(f"    tcp dport {port} counter accept" for port in allowed_ports)
    return f"""
table inet hostfw {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname != "eth0" accept
    ct state established,related accept
{rules}
    counter drop
  }}
}}
"""


def counted(rules: str, port: int | None) -> int:
    """Packets a rule counted: ``port``'s accept rule, or (None) the final drop."""
    pattern = (
        rf"tcp dport {port} counter packets (\d+)"
        if port
        else r"counter packets (\d+) bytes \d+ drop"
    )
    found = re.search(pattern, rules)
    assert found, rules
    return int(found.group(1))


# orders on host A (node-1), web on host B (node-3)
SHOP = manifest(
    namespace("shop"),
    service_account("shop", "web"),
    service_account("shop", "orders"),
    service("shop", "orders", [{"name": "http", "port": 8080, "targetPort": 8080}]),
    pod("shop", "orders", python(APP, "--name", "orders", "--port", "8080"),
        annotations={"ambient.io/application-tunnel": "PROXY"}, service_account="orders",
        node="node-1", ports=[8080], privileged=True, image="shop/app:1"),
    pod("shop", "web", ["sleep", "3600"], service_account="web", node="node-3",
        image="shop/client:1"),
)  # fmt: skip


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Up, Up]]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    lan = Lan()
    a, b = NetnsHost("a"), NetnsHost("b")
    folder = tmp_path_factory.mktemp("two")
    ups: list[Up] = []
    cluster: NetnsCluster | None = None
    try:
        lan.join(a)
        lan.join(b)
        cluster = NetnsCluster(a, folder / "cluster", address=a.address)
        kubeconfig = str(cluster.kubeconfig)
        api_port = int(cluster.cluster.server.rsplit(":", 1)[1])
        a.nft(firewall([api_port, 15012, 15010, 15008]))
        b.nft(firewall([15008]))
        done = a.ambient("install", "--kubeconfig", kubeconfig, timeout=180)
        assert done.returncode == 0, done.stderr
        for host, extra in ((a, ["--nodes", "node-1"]),
                            (b, ["--nodes", "node-3", "--control-plane", f"{a.address}:15012"])):  # fmt: skip
            state = folder / host.name
            argv = [sys.executable, "-m", "ambient", "up", "--kubeconfig", kubeconfig,
                    "--state-dir", str(state / "state"), *extra]  # fmt: skip
            state.mkdir()
            process = host.spawn(argv, state / "up.log")
            ups.append(Up(cluster, process, state / "state", state / "up.log", time.monotonic()))
            ups[-1].cluster = _on(cluster, host)
        yield ups[0], ups[1]
    finally:
        for up in ups:
            up.stop()
        if cluster is not None:
            cluster.down()
        a.remove()
        b.remove()
        lan.remove()


def _on(cluster: NetnsCluster, host: NetnsHost) -> NetnsCluster:
    """The same cluster, its commands run on ``host``."""
    view = object.__new__(NetnsCluster)
    view.__dict__.update(cluster.__dict__)
    view.host = host
    return view


@pytest.mark.timeout(400)
def test_a_pod_on_another_host_calls_by_service_name_over_hbone(hosts: tuple[Up, Up]) -> None:
    a, b = hosts
    for up, node in ((a, "node-1"), (b, "node-3")):
        wait_for(
            lambda up=up, node=node: _ready(up.get("get", "node", node)),
            f"{node} Ready",
            up,
        )
    done = b.host.apply(b.cluster.cluster.kubectl, SHOP)
    assert done.returncode == 0, done.stderr

    def hbone_everywhere() -> bool:
        # node-3's ztunnel (host B cannot reach host A's admin ports): the whole mesh's view
        done = b.ambient(
            "zc", "workloads", "--node", "node-3", "--workload-namespace", "shop", "-o", "json"
        )
        if done.returncode != 0:
            return False
        rows = json.loads(done.stdout)
        return len(rows) == 2 and all(r["protocol"] == "HBONE" for r in rows)

    wait_for(hbone_everywhere, "both pods HBONE", b)
    wait_for(
        lambda: all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
            for p in b.json("get", "pods", "-n", "shop")["items"]
        ),
        "the pods Ready",
        b,
    )
    called = b.ambient("exec", "-n", "shop", "web", "--", "curl", "-s", "--max-time", "10",
                       "http://orders:8080/")  # fmt: skip
    assert called.returncode == 0, called.stderr + b.log_text()[-3000:]
    answer = json.loads(called.stdout)
    assert answer["app"] == "orders"
    assert answer["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/web"
    # what crossed into host A: HBONE (15008) among the allowed ports, nothing dropped
    rules = a.host.counters("hostfw")
    assert counted(rules, 15008) > 0 and counted(rules, None) == 0, rules
    rules_b = b.host.counters("hostfw")  # host B lets in only 15008: nothing else came
    assert counted(rules_b, None) == 0, rules_b
    # a plain TCP connection between the hosts is dropped: the firewall does hold
    orders_ip = a.json("get", "pod", "orders", "-n", "shop")["status"]["podIP"]
    plain = b.host.run(
        "curl", "-s", "--noproxy", "*", "--max-time", "2", f"http://{orders_ip}:8080/"
    )
    assert plain.returncode != 0
    assert counted(a.host.counters("hostfw"), None) > 0
