"""Node start-up and enrolment times of ``ambient up --kubeconfig`` (issue 15), root.

    sudo .venv/bin/python bench/kube_nodes.py [--runs 3] [--pods 20] [--netns]

A host is a network namespace made here with a dev cluster inside (as the tests'
``tests.kube.hosts``), ``ambient install`` applied. Per run, in that host:

- ``ambient up --kubeconfig K --nodes node-1`` is started; measured from the spawn:
  the Node ``Ready`` and the ztunnel pod ``Ready`` (its readiness probe: synced with
  the control plane, listening), as a watch of the API server sees them;
  *baseline*: a bare Python process in the same host that imports the kubelet's
  modules and registers a Node Ready (interpreter start, imports and two API calls:
  the floor of any kubelet written in this language);
- a Deployment of ``--pods`` replicas (a Python HTTP server each) is applied and
  waited for; then ``kubectl label namespace bench istio.io/dataplane-mode=ambient``:
  measured from the label's write until the node's ztunnel serves every pod over
  HBONE (its ``/config_dump``: HBONE with the listener open) and until every pod has
  the ``ambient.istio.io/redirection`` annotation; *baseline*: until a bare watch of
  the namespace sees the label (the API server's own propagation).

With ``--netns`` the node runs ``ambient up --netns`` (each pod in a network namespace,
captured in-pod): HBONE then means the pod's in-pod listeners open and its redirection
in place.

Prints a table of the medians over the runs with the ratios to the baselines.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.e2e.manifests import deployment, manifest, namespace  # noqa: E402
from tests.kube.hosts import NetnsCluster, NetnsHost  # noqa: E402 - after sys.path is set

BARE = """
import asyncio, sys, time
from pathlib import Path
from ambient.kube.api import ClusterTarget, KubeClient, load_config
from ambient.kubelet.node import FIELD_MANAGER, NodeRegistration
async def main():
    client = KubeClient(load_config(ClusterTarget(Path(sys.argv[1]))), field_manager=FIELD_MANAGER)
    node = NodeRegistration(client, sys.argv[2], "127.0.0.1", storage=Path("/tmp"))
    await node.register()
    await client.close()
asyncio.run(main())
"""


SERVER = [sys.executable, "-m", "http.server", "--bind", "$(POD_IP)", "8080"]


def deployment_yaml(pods: int) -> str:
    """Namespace ``bench`` (not enrolled: the run labels it) and ``pods`` HTTP servers
    (privileged: this Python may be under /root, 0700)."""
    return manifest(
        namespace("bench", ambient=False),
        deployment("bench", "app", SERVER, replicas=pods, image="python:3.11", ports=[8080],
                   privileged=True),
    )  # fmt: skip


def kubectl(cluster: NetnsCluster, *args: str) -> Any:
    """The object(s) as JSON; None if there is none (yet)."""
    done = cluster.kubectl(*args, "-o", "json")
    if done.returncode != 0:
        if "NotFound" in done.stderr:
            return None
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)


def ready(obj: dict[str, Any] | None) -> bool:
    return obj is not None and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


class Watch:
    """``kubectl get ... --watch`` in the host; the arrival time of the first event whose
    object satisfies ``check`` (events are JSON objects, one or more lines each)."""

    def __init__(self, cluster: NetnsCluster, args: list[str], check: Any) -> None:
        argv = [str(cluster.cluster.kubectl), "get", *args, "--watch", "--output-watch-events",
                "-o", "json"]  # fmt: skip
        self.process = subprocess.Popen(cluster.host.argv(*argv), stdout=subprocess.PIPE, text=True)
        self.check = check
        self.at: float | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in self.process.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break  # not complete yet
                buffer = buffer.lstrip()[end:]
                if self.at is None and self.check(event.get("object") or {}):
                    self.at = time.monotonic()

    def wait(self, what: str, timeout: float = 180.0) -> float:
        deadline = time.monotonic() + timeout
        while self.at is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.01)
        self.process.kill()
        self.process.wait()
        return self.at


def until(check: Any, what: str, timeout: float = 180.0) -> float:
    """Poll ``check`` every 20 ms; the time.monotonic() it first held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic()


def one_run(
    cluster: NetnsCluster, folder: Path, pods: int, index: int, netns: bool = False
) -> dict[str, float]:
    host = cluster.host
    kubeconfig = str(cluster.kubeconfig)
    # baseline: a bare registration
    began = time.monotonic()
    done = host.run(sys.executable, "-c", BARE, kubeconfig, f"bare-{index}", timeout=60)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    bare = (
        until(lambda: ready(kubectl(cluster, "get", "node", f"bare-{index}")), "the bare Node")
        - began
    )
    cluster.kubectl("delete", "node", f"bare-{index}", "--wait=false")
    state = folder / f"run{index}"
    argv = [sys.executable, "-m", "ambient", "up", "--kubeconfig", kubeconfig,
            "--nodes", "node-1", "--state-dir", str(state),
            *(["--netns"] if netns else [])]  # fmt: skip
    nodes = Watch(cluster, ["nodes"], lambda o: o["metadata"]["name"] == "node-1" and ready(o))
    ztunnels = Watch(
        cluster,
        ["pods", "-n", "istio-system"],
        lambda o: o["metadata"]["name"] == "ztunnel-node-1" and ready(o),
    )
    time.sleep(0.5)
    began = time.monotonic()
    process = host.spawn(argv, folder / f"up{index}.log")
    try:
        node_ready = nodes.wait("node-1 Ready")
        ztunnel_ready = ztunnels.wait("the ztunnel pod Ready")
        applied = subprocess.run(
            host.argv(str(cluster.cluster.kubectl), "apply", "-f", "-"),
            input=deployment_yaml(pods),
            capture_output=True,
            text=True,
            check=False,
        )
        if applied.returncode != 0:
            raise RuntimeError(applied.stderr)
        rolled = cluster.kubectl(
            "rollout", "status", "deploy/app", "-n", "bench", "--timeout=180s", timeout=200
        )
        if rolled.returncode != 0:
            raise RuntimeError(rolled.stderr)
        labels = Watch(
            cluster,
            ["namespace", "bench"],
            lambda o: (
                (o["metadata"].get("labels") or {}).get("istio.io/dataplane-mode") == "ambient"
            ),
        )
        time.sleep(0.5)
        ztunnel_ip = kubectl(cluster, "get", "pod", "-n", "istio-system", "ztunnel-node-1")[
            "status"
        ]["podIP"]
        labelled = time.monotonic()
        cluster.kubectl("label", "namespace", "bench", "istio.io/dataplane-mode=ambient")
        seen = labels.wait("the label") - labelled
        hbone = until(lambda: _all_hbone(host, ztunnel_ip, pods), "every pod HBONE") - labelled
        annotated = until(lambda: _all_annotated(cluster, pods), "every annotation") - labelled
        # the node's kubelet deletes the pods (a namespace cannot go while they stay)
        cluster.kubectl("delete", "namespace", "bench", "--timeout=120s", timeout=150)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    cluster.kubectl("delete", "node", "node-1", "--wait=true", timeout=60)
    return {
        "node_ready": node_ready - began,
        "ztunnel_ready": ztunnel_ready - began,
        "bare_node_ready": bare,
        "label_to_hbone": hbone,
        "label_to_annotated": annotated,
        "label_seen": seen,
    }


def _all_hbone(host: NetnsHost, ztunnel_ip: str, pods: int) -> bool:
    done = host.run("curl", "-s", f"http://{ztunnel_ip}:15000/config_dump")
    try:
        dump = json.loads(done.stdout)
    except ValueError:
        return False
    listeners = dump.get("listeners", {})
    served = [
        w
        for w in dump.get("workloads", [])
        if w["namespace"] == "bench"
        and w["protocol"] == "HBONE"
        and (
            listeners.get(w["uid"], {}).get("hbone")  # SOCKS5 mode: the pod's 15008
            or (  # --netns: in-pod 15008 open and the redirection in place
                listeners.get(w["uid"], {}).get("hbone15008")
                and listeners.get(w["uid"], {}).get("redirected")
            )
        )
    ]
    return len(served) == pods


def _all_annotated(cluster: NetnsCluster, pods: int) -> bool:
    items = kubectl(cluster, "get", "pods", "-n", "bench")["items"]
    marked = [
        p
        for p in items
        if (p["metadata"].get("annotations") or {}).get("ambient.istio.io/redirection") == "enabled"
    ]
    return len(marked) == pods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--netns", action="store_true", help="ambient up --netns")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    host = NetnsHost("bench")
    results: list[dict[str, float]] = []
    try:
        cluster = NetnsCluster(host, folder / "cluster")
        try:
            done = host.ambient("install", "--kubeconfig", str(cluster.kubeconfig), timeout=180)
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            for index in range(args.runs):
                result = one_run(cluster, folder, args.pods, index, args.netns)
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
        finally:
            cluster.down()
    finally:
        host.remove()
    median = {k: statistics.median(r[k] for r in results) for k in results[0]}
    command = "sudo .venv/bin/python bench/kube_nodes.py " + " ".join(sys.argv[1:])
    print(f"\n{command}  ({args.runs} runs, medians; {args.pods} pods)\n")
    print("| measure | seconds | baseline | ratio |")
    print("| --- | ---: | ---: | ---: |")
    rows = [
        ("up → Node Ready", "node_ready", "bare_node_ready"),
        ("up → ztunnel pod Ready", "ztunnel_ready", "bare_node_ready"),
        ("label → every pod HBONE (ztunnel)", "label_to_hbone", "label_seen"),
        ("label → every pod annotated", "label_to_annotated", "label_seen"),
    ]
    for name, key, base in rows:
        ratio = median[key] / median[base] if median[base] else float("inf")
        print(f"| {name} | {median[key]:.2f} | {median[base]:.2f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
