"""Installing the plugin on a node: its executable, and its entry chained into the network config.

What istio-cni's install-cni does, for ``ambient-cni``:

- **The executable**: ``ambient.cni.plugin``'s own file, copied to the CNI binary
  folder as ``ambient-cni`` with ``#!<python> -IS`` in front (``-I``: the runtime's
  environment cannot redirect imports; ``-S``: no site-packages, faster), mode 0755,
  written to a temporary name and renamed (a runtime never runs half a file).
- **The configuration**: the *primary* network configuration is the first file, by
  name, of the configuration folder ending in ``.conf``, ``.conflist`` or ``.json`` that
  parses and names a plugin (the one kubelet's runtime uses). A ``.conflist`` gets our
  entry appended to ``plugins`` (an older entry of ours replaced); a single-plugin
  ``.conf`` becomes a ``.conflist`` holding it and ours. Written atomically, mode 0644.
  Our entry in any other file of the folder is removed (the primary changed).
- **Keeping it there**: :func:`ensure_chained` is cheap when nothing changed, so the
  node agent calls it every few seconds: a network plugin that rewrites its
  configuration (an upgrade of the cluster's CNI) loses our entry only until then.
- **Removing it**: :func:`unchain` takes our entry out of every file and deletes the
  executable; the node agent does it only when its DaemonSet is being deleted (see
  ``ambient.nodeagent.service``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ambient.cni import plugin

__all__ = [
    "CONFIG_SUFFIXES",
    "InstallError",
    "chain",
    "ensure_chained",
    "install_binary",
    "plugin_entry",
    "primary_config",
    "unchain",
]

CONFIG_SUFFIXES = (".conf", ".conflist", ".json")
DEFAULT_PYTHON = "/usr/bin/python3"


class InstallError(RuntimeError):
    """The plugin cannot be installed; the message names the file and the problem."""


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plugin_source(python: str = DEFAULT_PYTHON) -> bytes:
    """The executable's content: the plugin module after a ``#!<python> -IS`` line."""
    if not python.startswith("/") or any(c.isspace() for c in python):
        raise InstallError(f"--plugin-python {python!r}: an absolute path without spaces")
    return f"#!{python} -IS\n".encode() + Path(plugin.__file__).read_bytes()


def install_binary(bin_dir: Path, python: str = DEFAULT_PYTHON) -> Path:
    """Write ``bin_dir/ambient-cni`` (unchanged files are not rewritten); returns its path."""
    if not bin_dir.is_dir():
        raise InstallError(f"CNI binary folder {bin_dir} does not exist")
    target = bin_dir / plugin.PLUGIN_TYPE
    content = plugin_source(python)
    try:
        if target.read_bytes() == content and os.access(target, os.X_OK):
            return target
    except OSError:
        pass
    _atomic_write(target, content, 0o755)
    return target


def plugin_entry(
    run_dir: str = plugin.DEFAULT_RUN_DIR, exclude: Iterable[str] = ("kube-system",)
) -> dict[str, Any]:
    """Our entry of a network configuration list."""
    return {
        "type": plugin.PLUGIN_TYPE,
        "agent_run_dir": run_dir,
        "exclude_namespaces": list(exclude),
    }


def _load(path: Path) -> dict[str, Any] | None:
    try:
        conf = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return conf if isinstance(conf, dict) else None


def _names_a_plugin(conf: dict[str, Any]) -> bool:
    if "plugins" in conf:
        plugins = conf["plugins"]
        return isinstance(plugins, list) and any(
            isinstance(p, dict) and p.get("type") for p in plugins
        )
    return bool(conf.get("type"))


def primary_config(conf_dir: Path) -> Path | None:
    """The primary network configuration of ``conf_dir`` (see the module docstring)."""
    try:
        names = sorted(p.name for p in conf_dir.iterdir() if p.suffix in CONFIG_SUFFIXES)
    except OSError:
        return None
    for name in names:
        conf = _load(conf_dir / name)
        if conf is not None and _names_a_plugin(conf):
            return conf_dir / name
    return None


def _without_ours(plugins: list[Any]) -> list[Any]:
    return [p for p in plugins if not (isinstance(p, dict) and p.get("type") == plugin.PLUGIN_TYPE)]


def chain(conf_dir: Path, entry: dict[str, Any]) -> Path:
    """Put ``entry`` last in the primary configuration's plugins; returns that file."""
    primary = primary_config(conf_dir)
    if primary is None:
        raise InstallError(
            f"no network configuration in {conf_dir} to chain into: the cluster's network "
            "plugin (its .conf/.conflist) must be installed first"
        )
    conf = _load(primary)
    assert conf is not None
    if "plugins" in conf:
        conf["plugins"] = [*_without_ours(conf["plugins"]), entry]
        target = primary
    else:  # a single plugin's .conf: a list of it and ours
        single = {k: v for k, v in conf.items() if k != "cniVersion"}
        conf = {
            "cniVersion": conf.get("cniVersion", "0.3.1"),
            "name": conf.get("name", "k8s-pod-network"),
            "plugins": [single, entry],
        }
        target = primary.with_suffix(".conflist")
    _atomic_write(target, json.dumps(conf, indent=2).encode() + b"\n", 0o644)
    if target != primary:
        primary.unlink()
    for other in conf_dir.iterdir():
        if other != target and other.suffix in CONFIG_SUFFIXES:
            _remove_entry(other)
    return target


def _remove_entry(path: Path) -> bool:
    conf = _load(path)
    if conf is None or not isinstance(conf.get("plugins"), list):
        return False
    kept = _without_ours(conf["plugins"])
    if len(kept) == len(conf["plugins"]):
        return False
    conf["plugins"] = kept
    _atomic_write(path, json.dumps(conf, indent=2).encode() + b"\n", 0o644)
    return True


def is_chained(conf_dir: Path, entry: dict[str, Any]) -> bool:
    """Whether the primary configuration ends with exactly ``entry``."""
    primary = primary_config(conf_dir)
    conf = _load(primary) if primary is not None else None
    plugins = conf.get("plugins") if conf is not None else None
    return isinstance(plugins, list) and bool(plugins) and plugins[-1] == entry


def ensure_chained(conf_dir: Path, entry: dict[str, Any]) -> Path | None:
    """:func:`chain` unless already chained; returns the file written, None if none was."""
    if is_chained(conf_dir, entry):
        return None
    return chain(conf_dir, entry)


def unchain(conf_dir: Path, bin_dir: Path | None = None) -> list[Path]:
    """Remove our entry from every configuration (and the executable); returns the files changed."""
    changed = []
    if conf_dir.is_dir():
        for path in sorted(conf_dir.iterdir()):
            if path.suffix in CONFIG_SUFFIXES and _remove_entry(path):
                changed.append(path)
    if bin_dir is not None:
        (bin_dir / plugin.PLUGIN_TYPE).unlink(missing_ok=True)
    return changed
