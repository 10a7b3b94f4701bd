"""Loading manifests: files and folders of multi-document YAML into a ``ConfigSet``.

Decisions:

- A folder means every ``*.yaml``/``*.yml`` file below it, recursively, in
  sorted path order. Names starting with ``.`` and ``cacerts/`` folders (the
  plug-in CA files) are skipped; symlinked folders are followed once. A folder
  with no YAML files is an error. A file named explicitly is read whatever its
  extension.
- Empty documents are skipped. A document that is not a mapping is an error.
  ``kind: List`` (and ``<Kind>List``, as ``kubectl get -o yaml`` writes) loads
  its ``items``; their problems read ``items[i].<field>``.
- The same (kind, namespace, name) twice is an error at the second place,
  naming the first.
- Every problem of a load is collected; if any, one ``ConfigError`` lists them
  all, in file and document order. Warnings never fail a load; they are in
  ``ConfigSet.warnings`` (and ``ConfigError.warnings``).
- With ``check_refs`` (default) the whole set is checked by
  ``check_references``; ``ambient apply`` loads one file without it and checks
  the merged configuration instead.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ambient.config.configset import ConfigSet, Origin, Ref
from ambient.config.errors import ConfigError, Problem
from ambient.config.references import check_references
from ambient.config.registry import DEFAULT_REGISTRY, Registry
from ambient.config.resources import DEFAULT_NAMESPACE, Resource
from ambient.config.schema import INVALID, FieldPath, Report, render_path, show
from ambient.config.yamldoc import read_documents

__all__ = [
    "YAML_SUFFIXES",
    "find_files",
    "load_documents",
    "load_paths",
    "load_text",
    "parse_object",
]

YAML_SUFFIXES = (".yaml", ".yml")
SKIPPED_DIRS = frozenset({"cacerts"})


def _walk(root: Path, problems: list[Problem]) -> list[Path]:
    found: list[Path] = []
    seen: set[str] = set()

    def on_error(err: OSError) -> None:
        problems.append(Problem(str(err.filename or root), message=f"cannot read: {err.strerror}"))

    for current, dirs, files in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS]
        base = Path(current)
        found += [
            base / name
            for name in files
            if not name.startswith(".") and name.lower().endswith(YAML_SUFFIXES)
        ]
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def find_files(paths: Iterable[Path]) -> tuple[list[Path], list[Problem]]:
    """The files ``load_paths`` reads for ``paths``, and problems finding them."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            found = _walk(path, problems)
            if not found:
                problems.append(
                    Problem(str(path), message="no *.yaml or *.yml files in this folder")
                )
            files += found
        elif path.is_file():
            files.append(path)
        elif path.exists():
            problems.append(Problem(str(path), message="not a regular file or folder"))
        else:
            problems.append(Problem(str(path), message="no such file or folder"))
    unique: dict[str, Path] = {}
    for file in files:
        unique.setdefault(os.path.realpath(file), file)
    return list(unique.values()), problems


@dataclass(frozen=True)
class _Loaded:
    ref: Ref
    obj: Resource
    origin: Origin


@dataclass
class _Load:
    """The state of one load: objects so far, problems, warnings, refs of broken documents."""

    registry: Registry
    loaded: list[_Loaded] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    broken: set[Ref] = field(default_factory=set)
    files: list[str] = field(default_factory=list)

    def add_text(self, text: str, file: str) -> None:
        self.files.append(file)
        documents, syntax = read_documents(text)
        for document in documents:
            if document.value is not None:
                origin = Origin(file, document.index, line=document.line)
                self.add_document(document.value, origin)
        if syntax is not None:
            self.problems.append(
                Problem(
                    file,
                    syntax.document,
                    message=syntax.message,
                    line=syntax.line,
                    column=syntax.column,
                )
            )

    def add_file(self, path: Path) -> None:
        file = str(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            self.files.append(file)
            self.problems.append(Problem(file, message=f"cannot read: {err.strerror}"))
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            self.files.append(file)
            self.problems.append(
                Problem(file, message=f"not UTF-8 text (bad byte at offset {err.start})")
            )
            return
        self.add_text(text, file)

    def add_document(self, value: object, origin: Origin) -> None:
        kind = value.get("kind") if isinstance(value, Mapping) else None
        if origin.item is None and isinstance(kind, str) and self._is_list(kind):
            assert isinstance(value, Mapping)
            self._add_list(value, kind, origin)
        else:
            self._add_object(value, origin)

    def _is_list(self, kind: str) -> bool:
        return kind == "List" or (
            kind.endswith("List") and self.registry.lookup(kind[:-4]) is not None
        )

    def _add_list(self, value: Mapping[object, object], kind: str, origin: Origin) -> None:
        def problem(path: str, message: str) -> None:
            self.problems.append(Problem(origin.file, origin.document, kind, "", path, message))

        for key in value:
            if key not in ("apiVersion", "kind", "metadata", "items"):
                problem(str(key), "unknown field (a List has apiVersion, kind, metadata and items)")
        if value.get("apiVersion") != "v1":
            problem(
                "apiVersion", f"a {kind} has apiVersion v1, got {show(value.get('apiVersion'))}"
            )
        items = value.get("items")
        if not isinstance(items, list):
            problem(
                "items",
                "missing required field"
                if items is None
                else f"expected a list, got {show(items)}",
            )
            return
        for index, item in enumerate(items):
            self._add_object(item, Origin(origin.file, origin.document, index))

    def _add_object(self, value: object, origin: Origin) -> None:
        prefix = origin.prefix
        meta = value.get("metadata") if isinstance(value, Mapping) else None
        kind = value.get("kind") if isinstance(value, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        report = Report()
        obj = self._parse(value, prefix, report)
        for issue in report.issues:
            problem = Problem(
                origin.file,
                origin.document,
                kind if isinstance(kind, str) else "",
                name if isinstance(name, str) else "",
                render_path(issue.path),
                issue.message,
            )
            (self.warnings if issue.warning else self.problems).append(problem)
        if obj is not None:
            origin = Origin(origin.file, origin.document, origin.item, value, origin.line)
            self.loaded.append(_Loaded(Ref.of(obj), obj, origin))
        elif isinstance(kind, str) and isinstance(name, str):
            namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
            default = "" if kind == "Namespace" else DEFAULT_NAMESPACE
            self.broken.add(Ref(kind, namespace if isinstance(namespace, str) else default, name))

    def _parse(self, value: object, prefix: FieldPath, report: Report) -> Resource | None:
        kind = value.get("kind") if isinstance(value, Mapping) else None
        if isinstance(kind, str) and self._is_list(kind):
            assert isinstance(value, Mapping)
            report.error((*prefix, "kind"), "a List item cannot itself be a List")
            api_version = value.get("apiVersion")
            if api_version is None:
                report.error((*prefix, "apiVersion"), "missing required field")
            elif not isinstance(api_version, str):
                report.error((*prefix, "apiVersion"), f"expected a string, got {show(api_version)}")
            return None
        return parse_object(value, self.registry, report, prefix)

    def finish(self, check_refs: bool) -> ConfigSet:
        objects: dict[Ref, Resource] = {}
        origins: dict[Ref, Origin] = {}
        for entry in self.loaded:
            first = origins.get(entry.ref)
            if first is not None:
                self.problems.append(
                    Problem(
                        entry.origin.file,
                        entry.origin.document,
                        entry.ref.kind,
                        entry.ref.name,
                        render_path((*entry.origin.prefix, "metadata", "name")),
                        f"duplicate {entry.ref}: already defined at {first}",
                    )
                )
                continue
            objects[entry.ref] = entry.obj
            origins[entry.ref] = entry.origin
        config = ConfigSet(objects, origins, tuple(self._sorted(self.warnings)))
        if check_refs:
            self.problems += check_references(config, self.broken)
        if self.problems:
            raise ConfigError(self._sorted(self.problems), config.warnings)
        return config

    def _sorted(self, problems: list[Problem]) -> list[Problem]:
        order = {file: index for index, file in reversed(list(enumerate(self.files)))}

        def key(p: Problem) -> tuple[int, int]:
            if p.document is not None:
                return order.get(p.file, -1), p.document
            return order.get(p.file, -1), (2**31 if p.line is not None else 0)

        return sorted(problems, key=key)


def parse_object(
    value: object,
    registry: Registry | None = None,
    report: Report | None = None,
    prefix: FieldPath = (),
) -> Resource | None:
    """One document as a typed object, or None; its problems (and warnings) go to ``report``.

    What every load does for each document (kind, apiVersion, the kind's schema); a
    source of single objects (``ambient.kube`` reads the API server's) uses it directly.
    """
    registry = registry or DEFAULT_REGISTRY
    report = report if report is not None else Report()
    if not isinstance(value, Mapping):
        report.error(prefix, f"expected a mapping with apiVersion and kind, got {show(value)}")
        return None
    api_version, kind = value.get("apiVersion"), value.get("kind")
    spec = None
    if kind is None:
        report.error((*prefix, "kind"), "missing required field")
    elif not isinstance(kind, str):
        report.error((*prefix, "kind"), f"expected a string, got {show(kind)}")
    else:
        spec = registry.lookup(kind)
        if spec is None:
            report.error((*prefix, "kind"), _unknown_kind(kind, registry))
    if api_version is None:
        report.error((*prefix, "apiVersion"), "missing required field")
    elif not isinstance(api_version, str):
        report.error((*prefix, "apiVersion"), f"expected a string, got {show(api_version)}")
    elif spec is not None and api_version not in spec.api_versions:
        accepted = " or ".join(spec.api_versions)
        report.error(
            (*prefix, "apiVersion"), f"{spec.kind} is served by {accepted}, not {api_version!r}"
        )
    if spec is None or report.error_count:
        return None
    obj = spec.parser.parse(value, prefix, report)
    return None if obj is INVALID else obj


def _unknown_kind(kind: str, registry: Registry) -> str:
    kinds = registry.kinds()
    close = difflib.get_close_matches(kind, kinds, n=1, cutoff=0.6)
    if close:
        return f"unknown kind {kind!r} (did you mean {close[0]!r}?)"
    return f"unknown kind {kind!r}; supported kinds: {', '.join(kinds)}, List"


def load_text(
    text: str,
    filename: str = "<string>",
    *,
    registry: Registry | None = None,
    check_refs: bool = True,
) -> ConfigSet:
    """Load the documents of ``text`` (named ``filename`` in problems); raises ``ConfigError``."""
    load = _Load(registry or DEFAULT_REGISTRY)
    load.add_text(text, filename)
    return load.finish(check_refs)


def load_paths(
    paths: Iterable[Path],
    *,
    registry: Registry | None = None,
    check_refs: bool = True,
) -> ConfigSet:
    """Load files and folders (see the module docstring); raises ``ConfigError``."""
    files, problems = find_files(paths)
    load = _Load(registry or DEFAULT_REGISTRY)
    load.problems += problems
    for file in files:
        load.add_file(file)
    return load.finish(check_refs)


def load_documents(
    documents: Iterable[tuple[object, Origin]],
    *,
    registry: Registry | None = None,
    check_refs: bool = True,
) -> ConfigSet:
    """Load already parsed documents, each with where it was read (``ambient analyze``
    of a running mesh re-reads the manifests the control plane kept); raises ``ConfigError``."""
    load = _Load(registry or DEFAULT_REGISTRY)
    for value, origin in documents:
        if origin.file not in load.files:
            load.files.append(origin.file)
        load.add_document(
            value, Origin(origin.file, origin.document, origin.item, line=origin.line)
        )
    return load.finish(check_refs)
