"""The ``scripts/dev-cluster`` command line: ``up DIR``, ``down DIR``, ``build``.

Progress (``ambient.progress``): on a terminal a live line (the step under way, e.g. the
``go build`` of the first build, with its elapsed time) above which finished steps stay;
elsewhere each message is one line stamped with the seconds since the start, as the first
build's log in CI needs. Results go to standard output once the work is done.

SIGTERM and SIGHUP are turned into an exception while ``up`` runs, so a killed
``up`` still stops what it started (SIGKILL cannot be caught: ``down DIR`` then
finds the processes in ``DIR/cluster.json``, which is written as each starts).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from ambient.devcluster.build import BuildError, Progress, ensure_binaries
from ambient.devcluster.cluster import DevClusterError, Options, down, up
from ambient.gomod import GoNotFound
from ambient.progress import Reporter, progress

__all__ = ["main", "progress_of"]

PROG = "dev-cluster"


def progress_of(reporter: Reporter) -> Progress:
    """The build's and the cluster's messages on ``reporter``: one that ends with ``...``
    announces work under way (the live line), any other says what is done (it stays)."""

    def report(message: str) -> None:
        if message.endswith("..."):
            reporter.step(message)
        else:
            reporter.note(message)

    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A throwaway Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler) on loopback, built from Go modules.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="build once (cached), start a cluster in DIR, wait ready")
    start.add_argument("dir", type=Path, metavar="DIR")
    start.add_argument("--etcd-port", type=int, help="etcd client port (default: a free one)")
    start.add_argument("--apiserver-port", type=int, help="API server port (default: a free one)")
    start.add_argument(
        "--address",
        default="127.0.0.1",
        help="serve the API server on this address of the host (default: 127.0.0.1)",
    )
    stop = sub.add_parser("down", help="stop the cluster in DIR and remove its data")
    stop.add_argument("dir", type=Path, metavar="DIR")
    sub.add_parser("build", help="only build the binaries into the cache; print their folder")
    return parser


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            with progress(lines=True, prefix=f"{PROG} ") as reporter:
                built = ensure_binaries(progress_of(reporter))
            print(built)
        elif args.command == "up":
            signal.signal(signal.SIGTERM, _raise_on_signal)
            signal.signal(signal.SIGHUP, _raise_on_signal)
            with progress(lines=True, prefix=f"{PROG} ") as reporter:
                options = Options(
                    etcd_port=args.etcd_port,
                    apiserver_port=args.apiserver_port,
                    address=args.address,
                    progress=progress_of(reporter),
                )
                cluster = up(args.dir, options)
            print(f"kubeconfig: {cluster.kubeconfig}")
            print(f"kubectl:    {cluster.kubectl}   (e.g. {cluster.kubectl} get ns)")
            print(f"logs:       {cluster.dir / 'logs'}")
            print(f"stop with:  scripts/dev-cluster down {cluster.dir}")
        else:
            if not args.dir.exists():
                print(f"no dev cluster in {args.dir} (no such folder): nothing to do")
                return 0
            stopped = down(args.dir)
            print(
                f"stopped {', '.join(stopped) or 'nothing (no process was running)'}; "
                f"removed the cluster in {args.dir}"
            )
    except (DevClusterError, BuildError, GoNotFound) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"{PROG}: interrupted ({err or 'Ctrl-C'}); stopped what had started", file=sys.stderr)
        return 130
    return 0
