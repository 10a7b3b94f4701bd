"""Build the dev cluster's binaries from the pinned Go modules, once, into a cache.

The pins are ``pins/go.mod`` and ``pins/go.sum`` beside this file: ``k8s.io/kubernetes``
at one release with every ``k8s.io/*`` staging module replaced by the matching
``v0.x`` release (a dependency's replaces are ignored by Go, so the list repeats
the ``replace`` block of k8s.io/kubernetes's own go.mod), and
``go.etcd.io/etcd/server/v3`` at the version k8s.io/apiserver requires (the etcd
program is that module's main package). Nothing prebuilt is downloaded: Go
fetches the module sources through its module proxy and checks them against go.sum.

The binaries are built as upstream's release does (``hack/lib/golang.sh``):
``CGO_ENABLED=0``, ``-trimpath``, ``-ldflags '-s -w'`` plus the version variables
of ``k8s.io/component-base/version`` and ``k8s.io/client-go/pkg/version``, tags
``notest,grpcnotrace``. They land in
``$AMBIENT_CACHE/kube-<release>-<key>/bin`` (``AMBIENT_CACHE`` defaults to
``$XDG_CACHE_HOME/ambient``, i.e. ``~/.cache/ambient``), where ``<key>`` hashes
the pins and this recipe: a pin change builds anew beside the old build. A file
lock lets concurrent callers share one build. Go's own build cache (``go env
GOCACHE``) keeps the compiled packages, so a rebuild after a small pin change is
faster than the first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ambient.gomod import GoTool, cache_root, find_go

__all__ = [
    "BINARIES",
    "BuildError",
    "Pins",
    "binaries_if_built",
    "ensure_binaries",
]

PINS_DIR = Path(__file__).resolve().parent / "pins"
GO_MINIMUM = (1, 26)  # the `go` directive of the k8s.io staging modules at 1.36/1.37
BINARIES: tuple[tuple[str, str], ...] = (
    ("etcd", "go.etcd.io/etcd/server/v3"),
    ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
    ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
)
TAGS = "notest,grpcnotrace"
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
_REQUIRE = re.compile(r"^\s*(?:require\s+)?(\S+)\s+(v\S+)", re.MULTILINE)
# Memory one `go build` of kube-apiserver may need at link time (upstream's note: ~2 GiB).
_GIB_PER_JOB = 2

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """A binary failed to build; the message has the tail of Go's output."""


@dataclass(frozen=True)
class Pins:
    kubernetes: str
    etcd: str
    key: str  # hash of go.mod, go.sum and the build recipe

    @classmethod
    def load(cls, folder: Path = PINS_DIR) -> Pins:
        gomod = (folder / "go.mod").read_text()
        gosum = (folder / "go.sum").read_text()
        required = dict(_REQUIRE.findall(gomod))
        kubernetes, etcd = (
            required.get("k8s.io/kubernetes"),
            required.get("go.etcd.io/etcd/server/v3"),
        )
        if kubernetes is None or etcd is None:
            raise BuildError(
                f"{folder / 'go.mod'}: k8s.io/kubernetes or etcd/server/v3 not required"
            )
        digest = hashlib.sha256()
        for part in (gomod, gosum, TAGS, repr(BINARIES), repr(_VERSION_PACKAGES)):
            digest.update(part.encode() + b"\0")
        return cls(kubernetes, etcd, digest.hexdigest()[:12])

    @property
    def major_minor(self) -> tuple[str, str]:
        major, minor = self.kubernetes.lstrip("v").split(".")[:2]
        return major, minor

    def ldflags(self, build_date: str) -> str:
        major, minor = self.major_minor
        values = {
            "gitVersion": self.kubernetes,
            "gitMajor": major,
            "gitMinor": minor,
            "gitTreeState": "clean",
            "buildDate": build_date,
        }
        flags = ["-s", "-w"]
        for package in _VERSION_PACKAGES:
            flags += [f"-X {package}.{name}={value}" for name, value in values.items()]
        return " ".join(flags)


def build_dir(pins: Pins) -> Path:
    return cache_root() / f"kube-{pins.kubernetes}-{pins.key}"


def binaries_if_built(pins: Pins | None = None) -> Path | None:
    """The folder of the cached binaries, or None if they are not (all) built yet."""
    pins = pins or Pins.load()
    bin_dir = build_dir(pins) / "bin"
    if (build_dir(pins) / "build.json").is_file() and all(
        (bin_dir / name).is_file() for name, _ in BINARIES
    ):
        return bin_dir
    return None


def _parallel_jobs() -> int:
    """Go's -p: the cores, but no more jobs than the available memory holds at ~2 GiB each."""
    cores = os.cpu_count() or 1
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        available_gib = int(fields["MemAvailable"].split()[0]) // (1024 * 1024)
    except (OSError, KeyError, ValueError):
        return 1
    return max(1, min(cores, available_gib // _GIB_PER_JOB))


@contextmanager
def _locked(path: Path, progress: Progress) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build of the dev cluster's binaries ({path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _go_build(go: GoTool, module: Path, env: dict[str, str], argv: list[str], name: str) -> None:
    """Run one ``go build``; its output is kept for the error (Go prints nothing on success)."""
    done = subprocess.run(
        [str(go.path), "build", *argv],
        cwd=module,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise BuildError(f"go build of {name} failed (exit {done.returncode}):\n{tail}")


def ensure_binaries(progress: Progress = print) -> Path:
    """The folder holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl.

    Builds them on the first call (tens of minutes on two cores: see the README),
    printing each step with its elapsed time through ``progress``.
    """
    pins = Pins.load()
    if (ready := binaries_if_built(pins)) is not None:
        return ready
    root = build_dir(pins)
    with _locked(root.with_name(root.name + ".lock"), progress):
        if (ready := binaries_if_built(pins)) is not None:
            return ready
        return _build(pins, root, progress)


def _build(pins: Pins, root: Path, progress: Progress) -> Path:
    go = find_go(GO_MINIMUM)
    module = root / "module"
    partial = root / "bin.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    module.mkdir(exist_ok=True)
    for name in ("go.mod", "go.sum"):
        shutil.copyfile(PINS_DIR / name, module / name)
    jobs = _parallel_jobs()
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": f"-mod=readonly -trimpath -buildvcs=false -p={jobs}",
        "GOMAXPROCS": str(os.cpu_count() or 1),
    }
    build_date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ldflags = pins.ldflags(build_date)
    progress(
        f"building Kubernetes {pins.kubernetes} and etcd {pins.etcd} from Go modules with "
        f"{go.version_text} ({go.path}, -p={jobs}) into {root / 'bin'}; "
        "the first build takes long (see the README)"
    )
    started = time.monotonic()
    seconds: dict[str, float] = {}
    for index, (name, package) in enumerate(BINARIES, 1):
        progress(f"[{index}/{len(BINARIES)}] go build {package} ...")
        t0 = time.monotonic()
        _go_build(
            go,
            module,
            env,
            ["-tags", TAGS, "-ldflags", ldflags, "-o", str(partial / name), package],
            name,
        )
        seconds[name] = round(time.monotonic() - t0, 1)
        total = time.monotonic() - started
        progress(f"[{index}/{len(BINARIES)}] {name}: {seconds[name]:.0f} s (total {total:.0f} s)")
    record = {
        "kubernetes": pins.kubernetes,
        "etcd": pins.etcd,
        "key": pins.key,
        "go": go.version_text,
        "jobs": jobs,
        "seconds": seconds,
        "total_seconds": round(time.monotonic() - started, 1),
        "built": build_date,
    }
    (partial / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    final = root / "bin"
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    (root / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    progress(f"built in {record['total_seconds']:.0f} s: {final}")
    return final
