"""Soak: does a ztunnel's memory level off under steady traffic? RSS after each round.

    .venv/bin/python bench/soak.py [--rounds 6] [--requests 10000] [--modes l4,h2]
                                   [--baseline-ref REF | --no-baseline] [--netns] [--json]

Runs ``ambient up`` (real processes) on a small mesh: namespace ``soak``
enrolled and bound to the waypoint ``waypoint`` (hosted by node-1's ztunnel
process), the app ``orders`` (examples/shop/app.py) on node-2, and a ``load``
pod on node-1 from which ``ambient exec`` runs the load. For each mode, N
rounds of M requests:

- ``l4``: one request per new TCP connection to the orders *pod* address (pod
  traffic skips a waypoint for services): each is one HBONE stream from
  node-1's ztunnel to node-2's (``bench/soak_client.py``);
- ``h2``: HTTP/2 (h2c) to the orders *service*, ``--concurrency`` connections
  with 10 requests in flight on each, so every request goes load -> node-1
  ztunnel -> waypoint (in node-1's process) -> node-2 ztunnel -> app. With
  ``--netns`` the load is h2load (nghttp2-client, ``-c C -m 10``), otherwise
  ``bench/soak_client.py`` through the pod's SOCKS5 port (h2load cannot SOCKS);
- ``h1``: the same with HTTP/1.1 keep-alive connections (one request in flight
  on each).

The client runs with this Python (the ``h2`` mode needs the ``h2`` package), in a
privileged pod (``securityContext``) so that it may read it.

After each round (once every proxied connection is counted closed in both
ztunnels' metrics) it prints both ztunnel processes' RSS and the growth per
10,000 requests since the previous round, then the growth after round 1 (round
1 is warm-up: pools, caches and the allocator's arenas fill) and over the later
half of the rounds.

``--own-netns`` (root) runs everything in a new network namespace of its own
(``unshare --net``, loopback up): the mesh's fixed addresses are then private to
this run, which neither waits for nor disturbs another mesh on the machine (the
machine-wide mesh lock is not taken).

The baseline is the whole mesh from ``--baseline-ref`` (default: main before the
memory work of issue 12 item 16), its ``src/`` exported with ``git archive`` and
put first on ``PYTHONPATH`` for ``ambient up`` and every CLI call, run the same
way in the same run before this tree; nothing is disabled by a flag. ``--json``
prints the figures as one JSON object (the soak test reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import harness  # noqa: E402
from tests.e2e.harness import Mesh, scrape  # noqa: E402
from tests.e2e.manifests import (  # noqa: E402
    SLEEP,
    deployment,
    manifest,
    namespace,
    pod,
    service,
    service_account,
    waypoint,
)

CLIENT = ROOT / "bench" / "soak_client.py"
NODES = ("node-1", "node-2")
CONTROL_PLANE = "controlplane"  # its RSS is reported too, when status names its pid
# main before issue 12 item 16's memory work (h2's closed streams, label sets, cycles)
BASELINE_REF = "e81cce7"

# load may call the orders API (GET /api/*), nothing else
ORDERS_API = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-api, namespace: soak}
spec:
  targetRefs:
  - {kind: Service, group: "", name: orders}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/soak/sa/load]}
    to:
    - operation: {methods: [GET], paths: ["/api/*"]}
"""


def mesh_yaml(shop: Path, privileged: bool) -> str:
    """The load runs this venv's Python, under root's 0700 home: a ``privileged`` container
    may. Trees from before the pod launcher ran pods as the mesh's user and knew no
    securityContext (``privileged=False`` for them)."""
    return manifest(
        namespace("soak", waypoint="waypoint"),
        waypoint("soak", nodes="node-1"),
        ORDERS_API,
        service_account("soak", "orders"),
        service_account("soak", "load"),
        service("soak", "orders", [{"name": "http", "port": 8080, "targetPort": 8080}]),
        deployment("soak", "orders", ["python3", "app.py", "--name", "orders", "--port", "8080"],
                   service_account="orders", node="node-2", ports=[8080], workingDir=str(shop)),
        pod("soak", "load", ["python3", "-c", SLEEP], service_account="load", node="node-1",
            privileged=privileged),
    )  # fmt: skip


_PID = re.compile(r"\(pid (\d+)\)")
_H2LOAD = re.compile(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Soak:
    def __init__(self, mesh: Mesh, netns: bool, concurrency: int) -> None:
        self.mesh = mesh
        self.netns = netns
        self.concurrency = concurrency
        status = mesh.status()["components"]
        self.pids: dict[str, int] = {}
        self.metrics: dict[str, str] = {}
        for component in status:
            kind, _, node = component["name"].partition("/")
            if kind == "controlplane" and (found := _PID.search(component.get("detail", ""))):
                self.pids[CONTROL_PLANE] = int(found.group(1))
            if kind == "ztunnel" and node in NODES:
                found = _PID.search(component["detail"])
                assert found, component
                self.pids[node] = int(found.group(1))
                address = re.search(r"(127\.1\.0\.\d+) .*metrics:(\d+)", component["detail"])
                assert address, component
                self.metrics[node] = f"http://{address.group(1)}:{address.group(2)}/metrics"
        workloads = mesh.workloads("soak")
        self.orders_ip = next(w["workloadIps"][0] for n, w in workloads.items() if "orders" in n)

    def check_pids(self) -> None:
        """The figures mean nothing if a ztunnel restarted in between."""
        now = Soak(self.mesh, self.netns, self.concurrency).pids
        if now != self.pids:
            raise RuntimeError(f"a ztunnel restarted during the soak: {self.pids} -> {now}")

    def settle(self, timeout: float = 30) -> None:
        """Wait until every connection each ztunnel opened is counted closed."""
        deadline = time.monotonic() + timeout
        while True:
            open_now = 0
            for url in self.metrics.values():
                samples = scrape(url)
                opened = sum(
                    s.value for s in samples if s.name.endswith("connections_opened_total")
                )
                closed = sum(
                    s.value for s in samples if s.name.endswith("connections_closed_total")
                )
                open_now += int(opened - closed)
            if open_now <= 0 or time.monotonic() > deadline:
                return
            time.sleep(0.2)

    def rss(self) -> dict[str, int]:
        return {node: rss_kib(pid) for node, pid in self.pids.items()}

    def load(self, mode: str, requests: int) -> tuple[int, int, list[str]]:
        """One round; (succeeded, failed, first errors)."""
        timeout = 60 + requests / 20
        if mode == "h2" and self.netns and shutil.which("h2load"):
            result = self.mesh.exec(
                "load",
                "h2load",
                *("-n", str(requests), "-c", str(self.concurrency), "-m", "10"),
                "http://orders.soak:8080/api/items",
                namespace="soak",
                timeout=timeout,
            )
            found = _H2LOAD.search(result.stdout)
            if not found:
                raise RuntimeError(f"h2load: {result.stdout}{result.stderr}")
            return int(found.group(1)), int(found.group(2)), []
        target = f"{self.orders_ip}:8080" if mode == "l4" else "orders.soak.svc.cluster.local:8080"
        result = self.mesh.exec(
            "load",
            sys.executable,
            str(CLIENT),
            *("--mode", mode, "--target", target, "--requests", str(requests)),
            *("--concurrency", str(self.concurrency)),
            namespace="soak",
            timeout=timeout,
        )
        try:
            out = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"soak client: {result.stdout}{result.stderr}") from None
        return int(out["ok"]), int(out["failed"]), list(out["errors"])


def per_10k(kib: int, requests: int) -> float:
    """MiB per 10,000 requests."""
    return kib / 1024 / requests * 10_000 if requests else 0.0


def run_mode(soak: Soak, mode: str, rounds: int, requests: int, quiet: bool) -> dict[str, Any]:
    soak.settle()
    start = soak.rss()
    rows: list[dict[str, Any]] = []
    say = (lambda *a: None) if quiet else print
    say(f"\n{mode}: {rounds} rounds of {requests} requests")
    say("round  requests  ok      failed  " + "  ".join(f"{n} RSS MiB  Δ/10k" for n in NODES))
    say(
        "start  0                         "
        + "  ".join(f"{start[n] / 1024:12.1f}       " for n in NODES)
    )
    previous = start
    for number in range(1, rounds + 1):
        ok, failed, errors = soak.load(mode, requests)
        soak.settle()
        now = soak.rss()
        rows.append({"round": number, "ok": ok, "failed": failed, "errors": errors, "rss_kib": now})
        say(
            f"{number:<6} {number * requests:<9} {ok:<7} {failed:<7} "
            + "  ".join(
                f"{now[n] / 1024:12.1f}  {per_10k(now[n] - previous[n], requests):+6.2f}"
                for n in NODES
            )
            + (f"  errors: {errors[:2]}" if errors else "")
        )
        previous = now
    soak.check_pids()
    after_warmup = (rounds - 1) * requests
    growth = {
        n: per_10k(rows[-1]["rss_kib"][n] - rows[0]["rss_kib"][n], after_warmup) for n in NODES
    }
    later = rounds // 2  # the later half of the rounds
    later_growth = {
        n: per_10k(
            rows[-1]["rss_kib"][n] - rows[later - 1]["rss_kib"][n], (rounds - later) * requests
        )
        for n in NODES
    }
    say(
        "growth after round 1, MiB per 10,000 requests: "
        + ", ".join(f"{n} {growth[n]:+.2f}" for n in NODES)
        + f"; over the last {rounds - later} rounds: "
        + ", ".join(f"{n} {later_growth[n]:+.2f}" for n in NODES)
    )
    if CONTROL_PLANE in start:
        cp = [start[CONTROL_PLANE], *(r["rss_kib"][CONTROL_PLANE] for r in rows)]
        say("control plane RSS MiB by round: " + ", ".join(f"{k / 1024:.1f}" for k in cp))
    return {
        "mode": mode,
        "requests_per_round": requests,
        "start_rss_kib": start,
        "rounds": rows,
        "growth_mib_per_10k": growth,
        "later_growth_mib_per_10k": later_growth,
    }


def measure(args: argparse.Namespace, modes: list[str]) -> dict[str, Any]:
    """Run the soak once, with the ``ambient`` found first on ``PYTHONPATH``."""
    with tempfile.TemporaryDirectory(prefix="ambient-soak-") as tmp:
        base = Path(tmp)
        config = base / "config"
        config.mkdir()
        shop = ROOT / "examples" / "shop"
        (config / "soak.yaml").write_text(mesh_yaml(shop, not args.no_security_context))
        mesh = Mesh(
            config, base / "state", base / "up.log", up_args=("--netns",) if args.netns else ()
        )
        mesh.start(wait=120)
        try:
            soak = Soak(mesh, args.netns, args.concurrency)
            results = [run_mode(soak, m, args.rounds, args.requests, args.json) for m in modes]
        finally:
            mesh.stop()
            if args.netns:
                mesh.run("down")
    return {"netns": args.netns, "modes": results}


def private_network() -> None:
    """In a network namespace of our own: bring loopback up; no other mesh can be here,
    so the machine-wide mesh lock is not needed."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    harness.acquire_mesh_lock = lambda timeout=0: None
    harness.release_mesh_lock = lambda: None


def export_tree(ref: str, into: Path) -> Path:
    """``src/`` of commit ``ref``, exported with ``git archive``; the folder to import from."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    target = into / "baseline"
    target.mkdir()
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def run_tree(src: Path, args: argparse.Namespace, baseline: bool) -> dict[str, Any]:
    """This script in a child process whose ``ambient`` (mesh and CLI) comes from ``src``."""
    command = [sys.executable, __file__, "--tree-run", "--json"]
    command += ["--rounds", str(args.rounds), "--requests", str(args.requests)]
    command += ["--modes", args.modes, "--concurrency", str(args.concurrency)]
    command += ["--netns"] if args.netns else []
    command += ["--no-security-context"] if baseline else []
    command += ["--in-own-netns"] if args.in_own_netns else []
    env = {k: v for k, v in os.environ.items() if k != "AMBIENT_STATE_DIR"}
    env["PYTHONPATH"] = str(src)
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"soak of {src} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def report(trees: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """Per tree and mode: RSS by round and the growth per 10,000 requests after warm-up."""
    for name, result in trees.items():
        for mode in result["modes"]:
            print(f"\n{name}, {mode['mode']}: {args.rounds} rounds of {args.requests} requests")
            print("round  requests  failed  " + "  ".join(f"{n} RSS MiB  Δ/10k" for n in NODES))
            previous = mode["start_rss_kib"]
            cells = "  ".join(f"{previous[n] / 1024:12.1f}       " for n in NODES)
            print(f"start  0         -       {cells}")
            for row in mode["rounds"]:
                now = row["rss_kib"]
                cells = "  ".join(
                    f"{now[n] / 1024:12.1f}  {per_10k(now[n] - previous[n], args.requests):+6.2f}"
                    for n in NODES
                )
                done = row["round"] * args.requests
                print(f"{row['round']:<6} {done:<9} {row['failed']:<7} {cells}")
                previous = now
            if CONTROL_PLANE in mode["start_rss_kib"]:
                cp = [mode["start_rss_kib"], *(r["rss_kib"] for r in mode["rounds"])]
                text = ", ".join(f"{k[CONTROL_PLANE] / 1024:.1f}" for k in cp)
                print(f"control plane RSS MiB by round: {text}")
    print("\nRSS growth after round 1, MiB per 10,000 requests (later half of the rounds):")
    print("| mode | node | " + " | ".join(trees) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in trees) + " |")
    modes = [m["mode"] for m in next(iter(trees.values()))["modes"]]
    for index, mode in enumerate(modes):
        for node in NODES:
            columns: list[str] = []
            for result in trees.values():
                figures = result["modes"][index]
                growth = figures["growth_mib_per_10k"][node]
                later = figures["later_growth_mib_per_10k"][node]
                end = figures["rounds"][-1]["rss_kib"][node] / 1024
                columns.append(f"{growth:+.2f} ({later:+.2f}), {end:.1f} MiB at the end")
            print(f"| {mode} | {node} | " + " | ".join(columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", action="store_true", help="ambient up --netns (root)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=10_000, help="per round")
    parser.add_argument("--modes", default="l4,h2", help="comma-separated: l4, h2, h1")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="the tree to compare with")
    parser.add_argument("--no-baseline", action="store_true", help="only this tree")
    parser.add_argument(
        "--own-netns", action="store_true", help="run in a network namespace of its own (root)"
    )
    parser.add_argument("--in-own-netns", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-security-context", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 1 is warm-up)")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("l4", "h1", "h2") for m in modes):
        parser.error("--modes: one or more of l4, h2, h1")
    if args.own_netns and not args.in_own_netns:
        argv = [a for a in sys.argv[1:] if a != "--own-netns"]
        unshare = ["unshare", "--net", "--", sys.executable, __file__, *argv, "--in-own-netns"]
        sys.exit(subprocess.run(unshare).returncode)
    if args.in_own_netns:
        private_network()
    if args.tree_run or args.no_baseline:
        result = measure(args, modes)
        if args.json:
            print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="ambient-soak-tree-") as tmp:
        baseline = export_tree(args.baseline_ref, Path(tmp))
        trees = {
            f"before ({args.baseline_ref})": run_tree(baseline, args, baseline=True),
            "after (this tree)": run_tree(ROOT / "src", args, baseline=False),
        }
    if args.json:
        print(json.dumps(trees))
    else:
        report(trees, args)


if __name__ == "__main__":
    main()
