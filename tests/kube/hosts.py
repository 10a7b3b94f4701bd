"""Hosts for ``ambient up --kubeconfig`` tests: network namespaces the test makes (root).

A ``NetnsHost`` is a network namespace standing for a machine: ``ambient up`` runs in
it (adding its pods' addresses to its own interfaces, never to this machine's), and so
do the commands the test runs "on that host" (``run``). Hosts on one ``Lan`` share a
bridge (in a namespace of its own) and get addresses of ``10.254.0.0/24``; the test can
filter what crosses between them with nftables in each host (``allow_only``).

``NetnsCluster`` runs a dev cluster inside a host (its API server on ``address``, by
default the host's loopback): the components are started from one thread that
entered the namespace and stays alive until ``down`` (``PR_SET_PDEATHSIG`` follows the
starting thread), so they die with pytest even on ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from ambient import netns as ns
from ambient.devcluster import DevCluster, Options, up
from ambient.netns import NetnsThread

LAN = "10.254.0"


def _run(argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]


class NetnsHost:
    """A network namespace standing for a machine (see the module docstring)."""

    def __init__(self, label: str) -> None:
        self.name = f"akh-{uuid.uuid4().hex[:6]}-{label}"
        self.address = ""
        ns.add_netns(self.name)

    def argv(self, *argv: str) -> list[str]:
        """``argv`` run inside this host: in its network namespace only (``nsenter``, not
        ``ip netns exec``, which also gives each command a mount namespace of its own,
        so that the pods' namespaces ``ambient up --netns`` mounts in ``/run/netns``
        would not be seen by the commands run next to it)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", "--", *argv]

    def run(
        self, *argv: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(*argv), timeout=timeout, env=env, stdin=subprocess.DEVNULL)

    def ambient(
        self, *args: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "ambient", *args, timeout=timeout, env=env)

    def apply(self, kubectl: Path, text: str) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of ``text``, on this host."""
        return subprocess.run(
            self.argv(str(kubectl), "apply", "-f", "-"),
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def spawn(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """A long-running process in this host, SIGTERMed if pytest dies."""
        with log.open("wb") as out:
            return subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "--", *self.argv(*argv)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def nft(self, script: str) -> None:
        ns.nft(script, netns=self.name)

    def counters(self, table: str) -> str:
        return self.run("nft", "list", "table", "inet", table).stdout

    def remove(self) -> None:
        out = ns.ip("netns", "pids", self.name, check=False)
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        ns.delete_netns(self.name)


class Lan:
    """A bridge joining hosts (see the module docstring)."""

    def __init__(self) -> None:
        self.name = f"akl-{uuid.uuid4().hex[:6]}"
        ns.add_netns(self.name)
        ns.ip("link", "add", "br0", "type", "bridge", netns=self.name)
        ns.ip("link", "set", "br0", "up", netns=self.name)
        self.hosts: list[NetnsHost] = []

    def join(self, host: NetnsHost) -> str:
        """Link ``host`` to the bridge; its address on the LAN."""
        index = len(self.hosts) + 1
        port = f"p{index}"
        ns.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.name,
              netns=self.name)  # fmt: skip
        ns.ip("link", "set", port, "master", "br0", "up", netns=self.name)
        host.address = f"{LAN}.{index}"
        ns.ip("addr", "add", f"{host.address}/24", "dev", "eth0", netns=host.name)
        ns.ip("link", "set", "eth0", "up", netns=host.name)
        self.hosts.append(host)
        return host.address

    def remove(self) -> None:
        ns.delete_netns(self.name)


class NetnsCluster:
    """A dev cluster inside ``host`` (see the module docstring)."""

    def __init__(self, host: NetnsHost, folder: Path, address: str = "127.0.0.1") -> None:
        self.host = host
        self.thread = NetnsThread(host.name)
        options = Options(tie_to_parent=True, address=address, progress=_progress)
        self.cluster: DevCluster = self.thread._executor.submit(up, folder, options).result()

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.host.run(str(self.cluster.kubectl), *args, timeout=timeout)

    def down(self) -> None:
        try:
            self.thread._executor.submit(self.cluster.down).result()
        finally:
            self.thread.close()


def _progress(message: str) -> None:
    print(f"[netns dev-cluster] {message}", file=sys.__stderr__, flush=True)
