"""The L7 objects of the mesh as a node's waypoints see them (``L7Config``).

Its own module, light to import: a node proxy follows these objects over xDS from
the start but loads the waypoint itself (``waypoint.config``) only when it hosts a
waypoint pod; the YAML loader is imported at the first manifest to validate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ambient.config.configset import ConfigSet, Origin, Ref
from ambient.config.l7objects import is_l7_object, resource_name

__all__ = ["NOT_CONFIGURED", "L7Config"]

NOT_CONFIGURED = "the waypoint has no L7 configuration yet"


def _parse_manifest(name: str, manifest: str) -> tuple[Ref, Any, Origin]:
    """One ``WaypointResource``: validated, and named after what it holds."""
    from ambient.config import ConfigError, load_text

    try:
        loaded = load_text(manifest, name, check_refs=False)
    except ConfigError as exc:
        raise ValueError("; ".join(str(p) for p in exc.problems) or str(exc)) from None
    if len(loaded.objects) != 1:
        raise ValueError(f"{name}: holds {len(loaded.objects)} objects, not one")
    ((ref, obj),) = loaded.objects.items()
    if resource_name(ref) != name:
        raise ValueError(f"{name}: it describes {resource_name(ref)}")
    if not is_l7_object(obj):
        raise ValueError(f"{name}: not an object a waypoint enforces")
    return ref, obj, loaded.origins[ref]


class L7Config:
    """The L7 objects of the mesh as this node's waypoints see them."""

    def __init__(self) -> None:
        self.config = ConfigSet()
        self.version = 0
        self.synced = False
        self._parsed: dict[str, tuple[str, Ref, Any, Origin]] = {}  # xDS name -> (manifest, ...)
        self._listeners: list[Callable[[L7Config], None]] = []

    def on_change(self, listener: Callable[[L7Config], None]) -> None:
        """Call ``listener(self)`` after each change (tests, metrics)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.version += 1
        for listener in list(self._listeners):
            listener(self)

    @property
    def names(self) -> list[str]:
        """The xDS names applied (sorted; empty in one-process mode)."""
        return sorted(self._parsed)

    def set_config(self, config: ConfigSet) -> None:
        """Replace everything with the L7 objects of ``config`` (one-process mode)."""
        self.synced = True
        objects = {ref: obj for ref, obj in config.objects.items() if is_l7_object(obj)}
        if objects == dict(self.config.objects):
            return
        origins = {ref: config.origins[ref] for ref in objects if ref in config.origins}
        self.config = ConfigSet(objects, origins)
        self._changed()

    def apply(self, upserted: Mapping[str, str], removed: Iterable[str]) -> None:
        """Apply an xDS delta of manifests (name -> manifest JSON).

        Each upserted manifest is validated on its own (only those, not the others
        again); if any is invalid, ``ValueError`` names each one and its problems
        (the client NACKs with it) and nothing is applied.
        """
        parsed = dict(self._parsed)
        for name in removed:
            parsed.pop(name, None)
        errors = []
        for name in sorted(upserted):
            manifest = upserted[name]
            known = parsed.get(name)
            if known is not None and known[0] == manifest:
                continue
            try:
                parsed[name] = (manifest, *_parse_manifest(name, manifest))
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError("invalid waypoint resource: " + "; ".join(errors))
        self._parsed = parsed
        entries = [parsed[name] for name in sorted(parsed)]
        self.config = ConfigSet(
            {ref: obj for _, ref, obj, _ in entries},
            {ref: origin for _, ref, _, origin in entries},
        )
        self.synced = True
        self._changed()
