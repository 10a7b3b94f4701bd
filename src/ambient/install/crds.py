"""The CRDs ``ambient install`` applies, taken from the published Go modules at pinned versions.

Nothing is retyped: at setup time (``make setup``, or the first ``ambient install``
on a machine with Go) ``go mod download -json MODULE@VERSION`` fetches each module
through the Go module proxy, its ``Sum`` (Go's ``h1:`` hash of the module zip) must
equal the pin below, and the files we need are copied into the cache:

- ``istio.io/api``: ``kubernetes/customresourcedefinitions.gen.yaml``, keeping the
  ``networking.istio.io``, ``security.istio.io`` and ``telemetry.istio.io`` groups
  (``extensions.istio.io`` — WasmPlugin, TrafficExtension — runs no code here);
- ``sigs.k8s.io/gateway-api``: the standard channel, the files that
  ``config/crd/kustomization.yaml`` lists (what upstream's ``standard-install.yaml``
  bundles: the CRDs, GRPCRoute included, and the ``safe-upgrades``
  ValidatingAdmissionPolicy that refuses experimental or pre-v1.5 CRDs over them).

Where ``ambient install`` finds them: ``--crds DIR`` or ``$AMBIENT_CRDS_DIR`` (a copy
of the cache folder, for a machine without Go), else
``${AMBIENT_CACHE:-~/.cache/ambient}/crds``; if they are missing there it fetches
them (Go >= 1.21 and the module proxy needed), else it fails naming what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ambient.gomod import GoNotFound, cache_root, find_go

__all__ = [
    "GATEWAY_API",
    "ISTIO_API",
    "ISTIO_GROUPS",
    "CrdError",
    "ModulePin",
    "crds_dir",
    "ensure_crds",
    "fetch_crds",
    "load_crds",
]

ENV_VAR = "AMBIENT_CRDS_DIR"
ISTIO_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io")
_GO_MINIMUM = (1, 21)
# libyaml's loader when PyYAML has it: the CRDs are ~2 MB of YAML (seconds in pure Python).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CrdError(RuntimeError):
    """The CRDs could not be found, fetched or read; the message says what to do."""


@dataclass(frozen=True)
class ModulePin:
    module: str
    version: str
    sum: str  # go.sum's h1: hash of the module zip

    @property
    def folder(self) -> str:
        return f"{self.module.replace('/', '_')}@{self.version}"


ISTIO_API = ModulePin("istio.io/api", "v1.32.0", "h1:37mJvg9I0biYZAEQF+MATs4FNeCpXEIVO3LFpVb6iNM=")
GATEWAY_API = ModulePin(
    "sigs.k8s.io/gateway-api", "v1.6.3", "h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc="
)
_ISTIO_FILE = "kubernetes/customresourcedefinitions.gen.yaml"
_GATEWAY_KUSTOMIZATION = "config/crd/kustomization.yaml"


def crds_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$AMBIENT_CRDS_DIR``, else ``<cache>/crds``."""
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else cache_root() / "crds"


def _download(pin: ModulePin) -> Path:
    """``go mod download`` one module outside any Go module; its extracted folder."""
    try:
        go = find_go(_GO_MINIMUM)
    except GoNotFound as err:
        raise CrdError(f"cannot fetch the CRDs of {pin.module}@{pin.version}: {err}") from None
    env = {**os.environ, "GO111MODULE": "on", "GOWORK": "off", "GOFLAGS": "-mod=mod"}
    env["GOTOOLCHAIN"] = "local"
    with tempfile.TemporaryDirectory() as outside_any_module:
        done = subprocess.run(
            [str(go.path), "mod", "download", "-json", f"{pin.module}@{pin.version}"],
            cwd=outside_any_module,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    try:
        info: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        info = {}
    if done.returncode != 0 or "Dir" not in info:
        reason = info.get("Error") or done.stderr.strip() or f"exit {done.returncode}"
        raise CrdError(f"go mod download {pin.module}@{pin.version} failed: {reason}")
    if info.get("Sum") != pin.sum:
        raise CrdError(
            f"{pin.module}@{pin.version}: module hash {info.get('Sum')} is not the pinned {pin.sum}"
        )
    return Path(info["Dir"])


def _gateway_files(module_dir: Path) -> list[str]:
    """The standard channel's files, as ``config/crd/kustomization.yaml`` lists them."""
    kustomization = yaml.safe_load((module_dir / _GATEWAY_KUSTOMIZATION).read_text())
    return [f"config/crd/{name}" for name in kustomization["resources"]]


def _gateway_with_list(module_dir: Path) -> list[str]:
    return [_GATEWAY_KUSTOMIZATION, *_gateway_files(module_dir)]


def fetch_crds(target: Path | None = None) -> Path:
    """Download both modules and copy the needed files into ``target`` (default: the cache)."""
    target = crds_dir(target)
    for pin, files in ((ISTIO_API, lambda _d: [_ISTIO_FILE]), (GATEWAY_API, _gateway_with_list)):
        module_dir = _download(pin)
        staging = target / (pin.folder + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        for name in files(module_dir):
            dest = staging / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(module_dir / name, dest)
        (staging / "module.json").write_text(
            json.dumps({"module": pin.module, "version": pin.version, "sum": pin.sum}) + "\n"
        )
        final = target / pin.folder
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    return target


def _present(folder: Path) -> bool:
    return all((folder / pin.folder / "module.json").is_file() for pin in (ISTIO_API, GATEWAY_API))


def ensure_crds(explicit: Path | None = None) -> Path:
    """The folder with both modules' files, fetching them first if they are missing."""
    folder = crds_dir(explicit)
    if _present(folder):
        return folder
    if explicit is not None or os.environ.get(ENV_VAR):
        raise CrdError(
            f"{folder} does not hold the CRDs of {ISTIO_API.module}@{ISTIO_API.version} and "
            f"{GATEWAY_API.module}@{GATEWAY_API.version} (fetch them with "
            f"`python -m ambient.install.crds {folder}` where Go is installed)"
        )
    return fetch_crds(folder)


def _documents(path: Path) -> list[dict[str, Any]]:
    try:
        docs = yaml.load_all(path.read_text(), Loader=_LOADER)
        return [doc for doc in docs if isinstance(doc, dict)]
    except (OSError, yaml.YAMLError) as err:
        raise CrdError(f"cannot read {path}: {err}") from None


def load_crds(folder: Path) -> list[dict[str, Any]]:
    """The objects to apply, in order: Istio's CRDs (three groups), then Gateway API's files."""
    istio = [
        doc
        for doc in _documents(folder / ISTIO_API.folder / _ISTIO_FILE)
        if doc.get("kind") == "CustomResourceDefinition"
        and doc.get("spec", {}).get("group") in ISTIO_GROUPS
    ]
    gateway_dir = folder / GATEWAY_API.folder
    gateway: list[dict[str, Any]] = []
    for name in _gateway_files(gateway_dir):
        gateway += _documents(gateway_dir / name)
    return istio + gateway


def main(argv: list[str] | None = None) -> int:
    """``python -m ambient.install.crds [DIR]``: fetch the CRDs (setup time) and print where."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else None
    try:
        folder = crds_dir(target)
        if not _present(folder):
            folder = fetch_crds(target)
    except CrdError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
