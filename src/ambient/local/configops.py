"""Changing a running control plane's configuration: apply, delete, label, and folder reloads.

One implementation for both process models: ``LocalMesh`` (one process) and the
``ambient controlplane`` service (``ambient up``'s default) call the same
:class:`MeshConfig` on their ``ControlPlane``.

Decisions (as an operator of ``kubectl apply`` expects):

- ``apply`` adds or replaces objects, ``delete`` removes them, ``label`` changes one
  label; each is checked as a whole (references between objects included) and
  refused with the loader's ``file:document: Kind/name: field: problem`` lines, in
  which case nothing changes.
- A folder reload (a file in the config folder was edited, added or removed)
  replaces what the folder says: objects the folder declared before and no longer
  declares are deleted, objects whose text changed are replaced (live label changes
  on them are lost, as ``kubectl apply`` of the file would), objects the folder
  declares unchanged keep their live state, and objects created with
  ``ambient apply`` (not from the folder) are left alone. A folder that no longer
  loads is refused with the same errors as at start; the running configuration stays.
- With a ``journal`` file, every accepted ``apply``/``delete``/``label`` is appended to
  it, durably, before the caller is answered (``ambient.local.journal``), and
  :meth:`replay` re-applies them after a restart (the control plane process may crash
  and be restarted by ``ambient up``; the folder alone would lose them). A journal
  damaged before its last record stops the start (``JournalError``); an entry that no
  longer applies (the folder changed under it) is skipped with a warning.
- ``apply`` of an object equal to the running one is ``unchanged`` (kubectl's word) and
  keeps its origin, so ``ambient get -o yaml | ambient apply -f -`` changes nothing. A
  Pod whose ``status`` is only what the mesh observes (its address, node address and
  phase, as ``get -o yaml`` shows them) is the same Pod: a user-written
  ``status.podIP`` pins an address, the observed one does not.
- Each object's creation time (``metadata.creationTimestamp`` in ``ambient get``) is when
  this control plane first held it: the start for the folder's objects, the ``apply``
  that created one later; replacing an object keeps it, deleting forgets it. A
  restarted control plane starts its clock again (the journal records no times).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ambient.config import ConfigError, ConfigSet, load_paths, load_text
from ambient.config.configset import Origin, Ref
from ambient.config.references import check_references
from ambient.controlplane.plane import ControlPlane
from ambient.controlplane.workloads import pod_uid
from ambient.local.journal import Journal

__all__ = ["MeshConfig"]

log = logging.getLogger("ambient.config")


class MeshConfig:
    """The configuration operations of ``ambient apply|delete|label`` and of hot reload."""

    def __init__(
        self,
        plane: ControlPlane,
        config_dir: Path,
        folder: ConfigSet,
        *,
        journal: Path | None = None,
    ) -> None:
        """``folder``: what ``config_dir`` held when ``plane`` was built from it."""
        self.plane = plane
        self.config_dir = config_dir
        self.journal = journal
        self._folder = folder
        self._started = time.time()
        self._created: dict[Ref, float] = {}

    def created(self, ref: Ref) -> float:
        """When the running configuration first held ``ref`` (see the module docstring)."""
        return self._created.get(ref, self._started)

    def _note_created(self, before: ConfigSet, after: ConfigSet) -> None:
        now = time.time()
        for ref in after.objects:
            if ref not in before.objects:
                self._created[ref] = now
        for ref in list(self._created):
            if ref not in after.objects:
                del self._created[ref]
        self.on_rejected: Callable[[str], None] | None = None
        """Told ``"apply"`` or ``"folder"`` when a change is refused (metrics)."""

    # -- the CLI's operations ---------------------------------------------------------------

    def apply(self, config: ConfigSet) -> tuple[list[str], list[str]]:
        """Add or replace objects; returns (``kind/name configured|created`` lines, new warnings)."""
        current = self.plane.config
        same = {
            r for r, obj in config.objects.items() if self._same(r, obj, current.objects.get(r))
        }
        config = ConfigSet(
            objects={r: current.objects[r] if r in same else o for r, o in config.objects.items()},
            origins=config.origins,
            warnings=config.warnings,
        )
        merged = ConfigSet(
            objects={**current.objects, **config.objects},
            origins={
                **current.origins,
                **{r: o for r, o in config.origins.items() if r not in same},
            },
            warnings=config.warnings,
        )
        problems = check_references(merged)
        if problems:
            raise ConfigError(problems)
        before = set(self.plane.snapshot.warnings)
        self.plane.update(merged)
        self._note_created(current, merged)
        warnings = [w for w in self.plane.snapshot.warnings if w not in before]
        for warning in warnings:
            log.warning("%s", warning)
        lines = [
            f"{ref.kind.lower()}/{ref.name} "
            + (
                "unchanged"
                if ref in same
                else "configured"
                if ref in current.objects
                else "created"
            )
            for ref in sorted(config.objects)
        ]
        return lines, warnings

    def _same(self, ref: Ref, new: Any, old: Any) -> bool:
        """Whether applying ``new`` over ``old`` changes nothing: equal, or a Pod whose
        ``status`` is what the mesh observes of it (``ambient get pod -o yaml``)."""
        if old is None or new == old:
            return bool(new == old)
        if ref.kind != "Pod" or dataclasses.replace(new, status=old.status) != old:
            return False
        workload = self.plane.snapshot.workloads.get(pod_uid(ref.namespace, ref.name))
        live = {str(a) for a in workload.addresses} if workload is not None else set()
        return bool(new.status.pod_ip in (None, old.status.pod_ip) or new.status.pod_ip in live)

    def delete(self, config: ConfigSet) -> list[str]:
        """Remove the objects named in ``config``; returns ``kind/name deleted`` lines."""
        current = self.plane.config
        objects: dict[Ref, Any] = dict(current.objects)
        origins: dict[Ref, Origin] = dict(current.origins)
        lines = []
        for ref in sorted(config.objects):
            if objects.pop(ref, None) is None:
                lines.append(f"{ref.kind.lower()}/{ref.name} not found")
            else:
                origins.pop(ref, None)
                lines.append(f"{ref.kind.lower()}/{ref.name} deleted")
        after = ConfigSet(objects=objects, origins=origins)
        self.plane.update(after)
        self._note_created(current, after)
        return lines

    def label(self, kind: str, namespace: str, name: str, key: str, value: str | None) -> None:
        self.plane.label(kind, namespace, name, key, value)

    # -- the same, from text (the control APIs), journaled ------------------------------------

    def apply_text(self, text: str, filename: str) -> tuple[list[str], list[str]]:
        try:
            result = self.apply(load_text(text, filename, check_refs=False))
        except ConfigError:
            self._rejected("apply")
            raise
        self._record({"op": "apply", "text": text, "filename": filename})
        return result

    def delete_text(self, text: str, filename: str) -> list[str]:
        result = self.delete(load_text(text, filename, check_refs=False))
        self._record({"op": "delete", "text": text, "filename": filename})
        return result

    def label_object(
        self, kind: str, namespace: str, name: str, key: str, value: str | None
    ) -> None:
        self.label(kind, namespace, name, key, value)
        self._record(
            {"op": "label", "kind": kind, "namespace": namespace, "name": name, "key": key}
            | {"value": value}
        )

    def _rejected(self, source: str) -> None:
        if self.on_rejected is not None:
            self.on_rejected(source)

    def _record(self, entry: dict[str, Any]) -> None:
        if self.journal is not None:
            Journal(self.journal).append(entry)

    def replay(self) -> int:
        """Re-apply the journal's operations (after a restart); returns how many applied.

        Raises ``JournalError`` when the journal is damaged before its last record."""
        if self.journal is None:
            return 0
        applied = 0
        for number, entry in enumerate(Journal(self.journal).read(), 1):
            try:
                if entry["op"] == "apply":
                    self.apply(load_text(entry["text"], entry["filename"], check_refs=False))
                elif entry["op"] == "delete":
                    self.delete(load_text(entry["text"], entry["filename"], check_refs=False))
                else:
                    self.label(
                        entry["kind"],
                        entry["namespace"],
                        entry["name"],
                        entry["key"],
                        entry["value"],
                    )
                applied += 1
            except (ConfigError, ValueError, LookupError) as exc:
                log.warning("%s:%d: not replayed: %s", self.journal, number, exc)
        return applied

    # -- hot reload ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Reload the folder (see the module docstring); returns whether anything changed.

        Raises ``ConfigError`` (the folder does not load, or conflicts with live objects);
        the running configuration is then unchanged.
        """
        fresh = load_paths([self.config_dir])
        old = self._folder
        current = self.plane.config
        objects: dict[Ref, Any] = dict(current.objects)
        origins: dict[Ref, Origin] = dict(current.origins)
        for ref in old.objects:
            if ref not in fresh.objects:
                objects.pop(ref, None)
                origins.pop(ref, None)
        for ref, obj in fresh.objects.items():
            if old.objects.get(ref) != obj or ref not in objects:
                objects[ref] = obj
            origins[ref] = fresh.origins[ref]
        merged = ConfigSet(objects=objects, origins=origins, warnings=fresh.warnings)
        problems = check_references(merged)
        if problems:
            raise ConfigError(problems)
        self._folder = fresh
        if merged.objects == current.objects:
            return False
        self.plane.update(merged)
        self._note_created(current, merged)
        return True

    def reload_logged(self) -> None:
        """:meth:`reload`, reporting the outcome in the log (for the folder watcher)."""
        try:
            changed = self.reload()
        except ConfigError as exc:
            self._rejected("folder")
            for problem in exc.problems:
                log.error("error: %s", problem)
            log.error(
                "the edit of %s was refused: fix the %d problem(s) above; "
                "the running configuration is unchanged",
                self.config_dir,
                len(exc.problems),
            )
            return
        if changed:
            log.info("configuration reloaded from %s", self.config_dir)
