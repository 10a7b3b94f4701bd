"""Soak: under steady traffic a ztunnel's memory levels off (``bench/soak.py``, process mode).

``ambient up`` runs the soak mesh, in a network namespace of its own (``--own-netns``:
it neither waits for nor disturbs another mesh on this machine); the load runs in a
pod: rounds of new L4 connections to the app pod, each an HBONE stream on the pooled
connection from node-1's ztunnel to node-2's. After a warm-up round, the median
growth of either ztunnel's RSS from one round to the next must stay under ``LIMIT``
MiB per 10,000 connections: the median, because RSS also moves in steps (a new
1 MiB arena now and then) that say nothing about a trend. Before issue 12 item 16
each stream left ~150 B in h2's record of closed streams, and every round grew
both ztunnels by 1.0-3.2 MiB per 10,000 (median 1.3-1.4); now 0.0-0.4. The waypoint's
share is checked per request by ``tests/component/waypoint/test_memory.py``, a
connection's objects by ``tests/component/ztunnel/test_memory.py``; the h2 mode and
the figures before/after are in ``bench/RESULTS.md`` (``bench/soak.py``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys

import pytest

from tests.e2e.harness import REPO, clean_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="needs root and unshare(1) for a network namespace of its own",
    ),
]

LIMIT = 0.8  # MiB of RSS per 10,000 connections, median over the rounds after warm-up
ROUNDS = 5
REQUESTS = 1500  # connections per round


def test_ztunnel_memory_levels_off() -> None:
    run = subprocess.run(
        [
            *(sys.executable, str(REPO / "bench" / "soak.py"), "--json", "--no-baseline"),
            "--own-netns",
            *("--modes", "l4", "--rounds", str(ROUNDS), "--requests", str(REQUESTS)),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        env=clean_env(),
        cwd=REPO,
    )
    assert run.returncode == 0, f"bench/soak.py failed:\n{run.stdout}\n{run.stderr}"
    result = json.loads(run.stdout.strip().splitlines()[-1])
    problems = []
    for mode in result["modes"]:
        failed = sum(r["failed"] for r in mode["rounds"])
        if failed:
            errors = [e for r in mode["rounds"] for e in r["errors"]][:3]
            problems.append(f"{mode['mode']}: {failed} requests failed: {errors}")
        for node in mode["start_rss_kib"]:
            rss = [r["rss_kib"][node] for r in mode["rounds"]]
            steps = [(b - a) / 1024 / REQUESTS * 10_000 for a, b in itertools.pairwise(rss)]
            if statistics.median(steps) >= LIMIT:
                problems.append(
                    f"{mode['mode']}: {node}'s ztunnel grew a median {statistics.median(steps):.2f}"
                    f" MiB per 10,000 connections a round after warm-up (limit {LIMIT}); "
                    f"RSS MiB by round: {[round(k / 1024, 1) for k in rss]}"
                )
    assert not problems, "\n".join(problems)
