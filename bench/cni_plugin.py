"""What the ambient-cni plugin costs a container runtime per pod sandbox.

    .venv/bin/python bench/cni_plugin.py [--calls 60] [--python /usr/bin/python3]

The plugin is installed as ``cni-install`` installs it (``#!<python> -IS`` + the
plugin module) and exec'd as a runtime execs it (``CNI_*`` environment, the
configuration with ``prevResult`` on stdin), ``--calls`` times per case, one after
another (a runtime calls chained plugins in sequence):

- ``ADD`` forwarded to the node agent: a real ``PluginEventServer`` answering at once,
  in a process of its own (the agent's own work — API server questions, ``nft`` in the
  pod — is not the plugin's and is left out);
- ``ADD`` in an excluded namespace (no agent round trip): the plugin's floor;
- ``VERSION``.

Baselines in the same run: exec of ``/bin/true`` (a static binary's floor: what a Go
plugin cannot beat) and of ``<python> -IS -c pass`` (the interpreter alone). Printed:
median and 90th percentile wall time per call, and the ratio of medians to
``/bin/true``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ambient.cni.install import install_binary  # noqa: E402
from ambient.nodeagent.pluginevents import PluginEventServer, PodEvent  # noqa: E402

PREV = {"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.7/24", "interface": 0}]}
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/var/run/netns/cni-1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=u-1",
}


def timed(argv: list[str], stdin: bytes, env: dict[str, str], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        done = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False)
        samples.append((time.perf_counter() - start) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"{argv[0]} failed: {done.stdout!r} {done.stderr!r}")
    return samples


def _serve(run_dir: Path, ready: Any) -> None:
    async def handler(event: PodEvent) -> dict[str, Any]:
        return {"enrolled": True, "pod": event.pod}

    async def main() -> None:
        await PluginEventServer(handler).start(run_dir)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def serve(run_dir: Path) -> multiprocessing.Process:
    """A plugin-event server answering at once, in its own process (as the agent is)."""
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    server = context.Process(target=_serve, args=(run_dir, ready), daemon=True)
    server.start()
    if not ready.wait(10):
        raise SystemExit("the plugin-event server did not start")
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--python", default="/usr/bin/python3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = install_binary(Path(tmp), args.python)
        run_dir = Path(tmp) / "run"
        server = serve(run_dir)
        conf = {"cniVersion": "1.0.0", "name": "net", "type": "ambient-cni",
                "agent_run_dir": str(run_dir), "prevResult": PREV}  # fmt: skip
        stdin = json.dumps(conf).encode()
        excluded = json.dumps({**conf, "exclude_namespaces": ["shop"]}).encode()
        cases = {
            "/bin/true (static binary floor)": timed(["/bin/true"], b"", {}, args.calls),
            f"{args.python} -IS -c pass": timed(
                [args.python, "-IS", "-c", "pass"], b"", {}, args.calls
            ),
            "ambient-cni VERSION": timed(
                [str(binary)], b"{}", {"CNI_COMMAND": "VERSION"}, args.calls
            ),
            "ambient-cni ADD, excluded namespace": timed([str(binary)], excluded, ENV, args.calls),
            "ambient-cni ADD, to the node agent": timed([str(binary)], stdin, ENV, args.calls),
        }
        server.terminate()
    floor = statistics.median(next(iter(cases.values())))
    print(f"{args.calls} calls each, sequential; wall time per call (ms)")
    print(f"{'case':45} {'median':>8} {'p90':>8} {'x /bin/true':>12}")
    for name, samples in cases.items():
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1]
        print(f"{name:45} {median:8.2f} {p90:8.2f} {median / floor:11.1f}x")


if __name__ == "__main__":
    main()
