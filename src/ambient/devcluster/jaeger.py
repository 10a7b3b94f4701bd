"""Jaeger for the tracing tests: built once from its pinned Go module into the cache, run
on loopback only.

The pins are ``pins/jaeger/go.mod`` and ``go.sum`` (``go get -tool
github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0`` in an empty module); Go fetches the
sources through its module proxy and checks them against go.sum, nothing prebuilt is
downloaded. The binary lands in ``$AMBIENT_CACHE/jaeger-<version>-<key>/bin/jaeger``
(``~/.cache/ambient`` by default; ``<key>`` hashes the pins and this recipe), built with
``CGO_ENABLED=0 -trimpath -ldflags '-s -w'`` as the dev cluster's binaries are
(``devcluster.build``: the same lock, job count and Go toolchain choice). About 15
minutes of a 2-core machine the first time (most of it compiling the OpenTelemetry
Collector it is made of), instant afterwards. ``make jaeger-bin`` (a dependency of
``make test``) or ``python -m ambient.devcluster.jaeger`` builds it.

``loopback_config`` writes the only configuration the tests run it with: OTLP
receivers (gRPC and HTTP), in-memory storage and the query service (HTTP API and gRPC),
every listener on ``127.0.0.1`` with an explicit port, and the collector's own
telemetry server off (Jaeger's sample config binds ``0.0.0.0`` for its metrics and
pprof; neither is enabled here).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ambient.devcluster.build import BuildError, Progress, _go_build, _locked, _parallel_jobs
from ambient.gomod import cache_root, find_go

__all__ = ["JAEGER_PINS", "JaegerPorts", "binary_if_built", "ensure_jaeger", "loopback_config"]

JAEGER_PINS = Path(__file__).resolve().parent / "pins" / "jaeger"
PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
GO_MINIMUM = (1, 26)
_FLAGS = ("-trimpath", "-ldflags", "-s -w")


def _pins() -> tuple[str, str]:
    """(Jaeger's version, the key of the pins and recipe)."""
    gomod = (JAEGER_PINS / "go.mod").read_text()
    gosum = (JAEGER_PINS / "go.sum").read_text()
    found = re.search(r"^\s*github\.com/jaegertracing/jaeger\s+(v\S+)", gomod, re.MULTILINE)
    if found is None:
        raise BuildError(f"{JAEGER_PINS / 'go.mod'}: github.com/jaegertracing/jaeger not required")
    digest = hashlib.sha256()
    for part in (gomod, gosum, PACKAGE, repr(_FLAGS)):
        digest.update(part.encode() + b"\0")
    return found.group(1), digest.hexdigest()[:12]


def _root() -> Path:
    version, key = _pins()
    return cache_root() / f"jaeger-{version}-{key}"


def binary_if_built() -> Path | None:
    """The cached ``jaeger`` binary, or None when it is not built yet."""
    binary = _root() / "bin" / "jaeger"
    return binary if binary.is_file() and (_root() / "build.json").is_file() else None


def ensure_jaeger(progress: Progress = print) -> Path:
    """The ``jaeger`` binary, built first if needed (printing each step and its time)."""
    if (ready := binary_if_built()) is not None:
        return ready
    root = _root()
    with _locked(root.with_name(root.name + ".lock"), progress):
        if (ready := binary_if_built()) is not None:
            return ready
        return _build(root, progress)


def _build(root: Path, progress: Progress) -> Path:
    version, key = _pins()
    go = find_go(GO_MINIMUM)
    module, partial = root / "module", root / "bin.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    module.mkdir(exist_ok=True)
    for name in ("go.mod", "go.sum"):
        shutil.copyfile(JAEGER_PINS / name, module / name)
    jobs = _parallel_jobs()
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": f"-mod=readonly -buildvcs=false -p={jobs}",
    }
    progress(
        f"building Jaeger {version} from its Go module with {go.version_text} (-p={jobs}) into "
        f"{root / 'bin'}; the first build takes about 15 minutes on 2 cores ..."
    )
    started = time.monotonic()
    _go_build(go, module, env, [*_FLAGS, "-o", str(partial / "jaeger"), PACKAGE], "jaeger")
    record = {
        "jaeger": version,
        "key": key,
        "go": go.version_text,
        "jobs": jobs,
        "seconds": round(time.monotonic() - started, 1),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    final = root / "bin"
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    (root / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    progress(f"built Jaeger in {record['seconds']:.0f} s: {final / 'jaeger'}")
    return final / "jaeger"


@dataclass(frozen=True)
class JaegerPorts:
    """Jaeger's listeners, all on 127.0.0.1."""

    otlp_grpc: int
    otlp_http: int
    query_http: int
    query_grpc: int


def loopback_config(ports: JaegerPorts, max_traces: int = 10000) -> str:
    """Jaeger's YAML configuration with every listener on loopback (see the module doc)."""
    host = "127.0.0.1"
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: {host}:{ports.query_http}
    grpc:
      endpoint: {host}:{ports.query_grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {host}:{ports.otlp_grpc}
      http:
        endpoint: {host}:{ports.otlp_http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def main() -> int:
    from ambient.devcluster.cli import progress_of
    from ambient.progress import progress

    try:
        with progress(lines=True, prefix="jaeger ") as reporter:
            path = ensure_jaeger(progress_of(reporter))
    except (BuildError, OSError, RuntimeError) as exc:
        print(f"jaeger: {exc}", file=sys.stderr)
        return 1
    print(f"jaeger: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
