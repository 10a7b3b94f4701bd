"""``up`` and ``down`` of a dev cluster: etcd and the three control-plane programs on loopback.

Layout of the cluster folder ``DIR`` (nothing else is written, and ``down`` removes
only these): ``cluster.json`` (ports, processes, binaries), ``pki/``, ``etcd/``
(data), ``config/`` (the components' kubeconfigs, the scheduler's configuration),
``logs/<component>.log``, ``kubeconfig`` (admin) and ``bin/kubectl`` (a wrapper
using that kubeconfig unless ``--kubeconfig`` says otherwise).

Choices (after envtest and ``hack/local-up-cluster.sh``): every port is a free
loopback port (so clusters run side by side); etcd with ``--unsafe-no-fsync``;
the API server advertises 127.0.0.1 with ``--endpoint-reconciler-type=none``
(Endpoints validation refuses loopback addresses, so the ``kubernetes``
Service has no endpoints: in-cluster clients must be pointed at the server
explicitly); Services get VIPs from ``10.96.0.0/16``; authorization
``Node,RBAC``; the controller-manager runs every default controller with
per-controller service-account credentials, and allocates each Node a
``/24`` of ``10.244.0.0/16`` as its ``spec.podCIDR`` (kubeadm's
``--pod-network-cidr``: the node IPAM a kubelet of ours takes its pods'
addresses from); nothing leader-elects. ``Options.address`` serves the API
server on another address of this host (in its certificate, and in every
kubeconfig) instead of 127.0.0.1, for clients in other network namespaces
(the other components still talk over loopback). ``up``
returns once ``/readyz`` is ok, the controller-manager and scheduler answer
``/healthz`` and the ``default`` ServiceAccount exists in ``default``. A
component that fails stops the rest: processes are stopped, data removed, the
logs kept and the error names the component with the tail of its log.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ambient.devcluster import probes
from ambient.devcluster.build import Pins, Progress, ensure_binaries
from ambient.devcluster.config import write_kubeconfig, write_scheduler_config
from ambient.devcluster.pki import ClusterPKI, make_pki
from ambient.devcluster.processes import ProcessRef, alive, start, stop

__all__ = ["DevCluster", "DevClusterError", "Options", "down", "read_cluster", "up"]

HOST = "127.0.0.1"
STATE_FILE = "cluster.json"
OWNED = ("cluster.json", "pki", "etcd", "config", "logs", "kubeconfig", "bin")
START_TIMEOUT = {"etcd": 60.0, "kube-apiserver": 180.0, "controllers": 120.0}
_TAIL_LINES = 30


class DevClusterError(RuntimeError):
    """A clear, one-paragraph reason why a dev cluster could not start or stop."""


@dataclass(frozen=True)
class Options:
    etcd_port: int | None = None
    apiserver_port: int | None = None
    service_cidr: str = "10.96.0.0/16"
    first_service_ip: str = "10.96.0.1"
    cluster_cidr: str = "10.244.0.0/16"
    """Pod addresses: each Node gets a ``/node_cidr_mask`` of it as ``spec.podCIDR``."""
    node_cidr_mask: int = 24
    address: str = HOST
    """Where the API server listens and is reached (kubeconfigs, certificate)."""
    # The kernel kills the components when the caller dies (PR_SET_PDEATHSIG: strictly,
    # when the *thread* that started them ends, so call up() from a long-lived thread).
    tie_to_parent: bool = False
    progress: Progress = print


@dataclass
class DevCluster:
    dir: Path
    server: str
    version: str
    processes: list[ProcessRef]
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def kubectl(self) -> Path:
        return self.dir / "bin" / "kubectl"

    def down(self) -> None:
        """Stop this cluster's processes (children are reaped) and remove its data."""
        _stop_all(self.processes, self._children)
        _remove_owned(self.dir)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-_TAIL_LINES:]) or "(empty log)"


class _Starter:
    """Starts components one by one and remembers them, to stop them all on failure."""

    def __init__(self, folder: Path, bin_dir: Path, options: Options) -> None:
        self.dir, self.bin, self.options = folder, bin_dir, options
        self.refs: list[ProcessRef] = []
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.server = ""
        self.ports: dict[str, int] = {}

    def launch(self, name: str, args: list[str]) -> None:
        self.options.progress(f"starting {name}")
        log = self.dir / "logs" / f"{name}.log"
        proc, ref = start(
            name,
            [str(self.bin / name), *args],
            log,
            cwd=self.dir,
            tie_to_parent=self.options.tie_to_parent,
        )
        self.refs.append(ref)
        self.children[name] = proc
        self.save()  # at once: a `down` after a killed `up` still finds every process

    def save(self) -> None:
        state = {
            "server": self.server,
            "version": Pins.load().kubernetes,
            "bin": str(self.bin),
            "ports": self.ports,
            "processes": [
                {"name": ref.name, "pid": ref.pid, "start_time": ref.start_time}
                for ref in self.refs
            ],
        }
        (self.dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def wait(self, names: list[str], ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``ready`` (a readiness endpoint) until true; fail as soon as one of ``names`` exits."""
        deadline = time.monotonic() + timeout
        while True:
            for name in names:
                code = self.children[name].poll()
                if code is not None:
                    raise self.failure(name, f"exited with code {code}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise self.failure(names[0], f"{what} not true after {timeout:.0f} s")
            time.sleep(0.2)

    def failure(self, name: str, reason: str) -> DevClusterError:
        log = self.dir / "logs" / f"{name}.log"
        return DevClusterError(
            f"{name} failed to start: {reason}\n--- last lines of {log} ---\n{_tail(log)}"
        )


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise DevClusterError(f"{folder} exists and is not a folder")
    state = folder / STATE_FILE
    if state.is_file():
        running = [ref for ref in read_cluster(folder).processes if alive(ref)]
        if running:
            pids = ", ".join(f"{ref.name} pid {ref.pid}" for ref in running)
            raise DevClusterError(
                f"a dev cluster already runs in {folder} ({pids}); "
                f"run `scripts/dev-cluster down {folder}` first"
            )
        _remove_owned(folder)  # a stale cluster (e.g. after a reboot): start afresh
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name != "logs")
        if foreign:
            raise DevClusterError(
                f"{folder} is not empty and holds no dev cluster ({', '.join(foreign[:5])}); "
                "give a new or empty folder"
            )


def up(folder: Path, options: Options | None = None) -> DevCluster:
    """Build the binaries if needed, then start a cluster in ``folder`` and wait until ready."""
    options = options or Options()
    folder = folder.absolute()
    _check_folder(folder)
    try:
        shutil.rmtree(folder / "logs", ignore_errors=True)
        for sub in ("logs", "etcd", "config", "bin"):
            (folder / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise DevClusterError(
            f"cannot create the cluster folder {folder}: {err.strerror}"
        ) from None
    starter: _Starter | None = None
    try:
        bin_dir = ensure_binaries(options.progress)
        starter = _Starter(folder, bin_dir, options)
        cluster = _start(folder, bin_dir, options, starter)
    except BaseException as err:
        if starter is not None:
            _stop_all(starter.refs, starter.children)
        _remove_owned(folder, keep_logs=starter is not None)
        if isinstance(err, OSError):
            raise DevClusterError(f"starting the dev cluster in {folder}: {err}") from None
        raise
    options.progress(f"dev cluster {cluster.version} ready: {cluster.server} (in {folder})")
    return cluster


def _start(folder: Path, bin_dir: Path, options: Options, starter: _Starter) -> DevCluster:
    address = options.address
    pki = make_pki(folder / "pki", options.first_service_ip, extra_ips=(address,))
    etcd_port = options.etcd_port or probes.free_port()
    peer_port = probes.free_port()
    api_port = options.apiserver_port or probes.free_port(address)
    kcm_port, sched_port = probes.free_port(), probes.free_port()
    server = f"https://{_host_port(address, api_port)}"
    starter.server = server
    starter.ports = {"etcd": etcd_port, "etcd-peer": peer_port, "kube-apiserver": api_port}
    starter.ports |= {"kube-controller-manager": kcm_port, "kube-scheduler": sched_port}
    configs = _write_configs(folder, server, pki)
    starter.launch("etcd", _etcd_args(folder, etcd_port, peer_port))
    starter.wait(
        ["etcd"],
        lambda: _etcd_healthy(etcd_port),
        "/health",
        START_TIMEOUT["etcd"],
    )
    starter.launch("kube-apiserver", _apiserver_args(pki, etcd_port, api_port, options))
    admin_tls = probes.mutual_tls(pki.ca_cert, pki.admin.cert, pki.admin.key)
    starter.wait(
        ["kube-apiserver"],
        lambda: probes.get(address, api_port, "/readyz", admin_tls) == (200, "ok"),
        "/readyz",
        START_TIMEOUT["kube-apiserver"],
    )
    starter.launch("kube-controller-manager", _kcm_args(pki, configs["kcm"], kcm_port, options))
    starter.launch("kube-scheduler", _scheduler_args(configs, sched_port))
    healthz = probes.insecure_tls()
    for name, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)):
        starter.wait(
            [name, "kube-controller-manager", "kube-scheduler"],
            _answers_ok(port, "/healthz", healthz),
            "/healthz",
            START_TIMEOUT["controllers"],
        )
    default_sa = "/api/v1/namespaces/default/serviceaccounts/default"
    starter.wait(
        ["kube-controller-manager", "kube-apiserver"],
        lambda: (probes.get(address, api_port, default_sa, admin_tls) or (0, ""))[0] == 200,
        "the default ServiceAccount",
        START_TIMEOUT["controllers"],
    )
    version = Pins.load().kubernetes
    _write_kubectl(folder, bin_dir)
    return DevCluster(folder, server, version, list(starter.refs), dict(starter.children))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _answers_ok(port: int, path: str, tls: ssl.SSLContext) -> Callable[[], bool]:
    return lambda: probes.get(HOST, port, path, tls) == (200, "ok")


def _etcd_healthy(port: int) -> bool:
    answer = probes.get(HOST, port, "/health")
    if answer is None or answer[0] != 200:
        return False
    try:
        return bool(json.loads(answer[1]).get("health") == "true")
    except ValueError:
        return False


def _write_configs(folder: Path, server: str, pki: ClusterPKI) -> dict[str, Path]:
    write_kubeconfig(
        folder / "kubeconfig",
        server=server,
        ca_cert=pki.ca_cert,
        client=pki.admin,
        user="admin",
        context="dev-cluster",
    )
    kcm = folder / "config" / "controller-manager.kubeconfig"
    write_kubeconfig(
        kcm,
        server=server,
        ca_cert=pki.ca_cert,
        client=pki.controller_manager,
        user="system:kube-controller-manager",
        context="dev-cluster",
    )
    sched = folder / "config" / "scheduler.kubeconfig"
    write_kubeconfig(
        sched,
        server=server,
        ca_cert=pki.ca_cert,
        client=pki.scheduler,
        user="system:kube-scheduler",
        context="dev-cluster",
    )
    sched_config = folder / "config" / "scheduler.yaml"
    write_scheduler_config(sched_config, sched)
    return {"kcm": kcm, "scheduler": sched, "scheduler-config": sched_config}


def _etcd_args(folder: Path, port: int, peer_port: int) -> list[str]:
    client, peer = f"http://{HOST}:{port}", f"http://{HOST}:{peer_port}"
    return [
        "--name=dev",
        f"--data-dir={folder / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=dev={peer}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def _apiserver_args(pki: ClusterPKI, etcd_port: int, port: int, options: Options) -> list[str]:
    return [
        f"--etcd-servers=http://{HOST}:{etcd_port}",
        f"--bind-address={options.address}",
        f"--secure-port={port}",
        f"--advertise-address={options.address}",
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki.serving.cert}",
        f"--tls-private-key-file={pki.serving.key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-cluster-ip-range={options.service_cidr}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def _kcm_args(pki: ClusterPKI, kubeconfig: Path, port: int, options: Options) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={port}",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        "--use-service-account-credentials=true",
        "--controllers=*",
        "--allocate-node-cidrs=true",
        f"--cluster-cidr={options.cluster_cidr}",
        f"--node-cidr-mask-size={options.node_cidr_mask}",
        f"--service-cluster-ip-range={options.service_cidr}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def _scheduler_args(configs: dict[str, Path], port: int) -> list[str]:
    return [
        f"--config={configs['scheduler-config']}",
        f"--authentication-kubeconfig={configs['scheduler']}",
        f"--authorization-kubeconfig={configs['scheduler']}",
        f"--bind-address={HOST}",
        f"--secure-port={port}",
        "--profiling=false",
    ]


def _write_kubectl(folder: Path, bin_dir: Path) -> None:
    wrapper = folder / "bin" / "kubectl"
    kubeconfig = shlex.quote(str(folder / "kubeconfig"))
    wrapper.write_text(
        "#!/bin/sh\n"
        f"# kubectl for the dev cluster in {folder}: its admin kubeconfig unless --kubeconfig.\n"
        f'KUBECONFIG={kubeconfig} exec {shlex.quote(str(bin_dir / "kubectl"))} "$@"\n'
    )
    wrapper.chmod(0o755)


def read_cluster(folder: Path) -> DevCluster:
    """The cluster recorded in ``folder`` (its processes may or may not still run)."""
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
        refs = [
            ProcessRef(p["name"], int(p["pid"]), int(p["start_time"])) for p in state["processes"]
        ]
        return DevCluster(folder.absolute(), str(state["server"]), str(state["version"]), refs)
    except FileNotFoundError:
        raise DevClusterError(f"no dev cluster in {folder} (no {STATE_FILE})") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DevClusterError(f"{path}: unreadable dev cluster state: {err}") from None


def down(folder: Path) -> list[str]:
    """Stop the cluster recorded in ``folder`` and remove its files; the names stopped."""
    folder = folder.absolute()
    if not folder.exists():
        return []
    cluster = read_cluster(folder)
    running = [ref.name for ref in cluster.processes if alive(ref)]
    _stop_all(cluster.processes, {})
    _remove_owned(folder)
    return running


def _stop_all(refs: list[ProcessRef], children: dict[str, subprocess.Popen[bytes]]) -> None:
    for ref in reversed(refs):  # scheduler and controller-manager, apiserver, then etcd
        stop(ref, children.get(ref.name))


def _remove_owned(folder: Path, keep_logs: bool = False) -> None:
    """Remove what ``up`` wrote (and only that), then the folder if that left it empty."""
    for name in OWNED:
        if keep_logs and name == "logs":
            continue
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (the kept logs), or already gone
        folder.rmdir()
