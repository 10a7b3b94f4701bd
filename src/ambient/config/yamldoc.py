"""Multi-document YAML to plain Python values, with syntax errors as line:column problems.

The YAML dialect is PyYAML's safe YAML 1.1 (as Kubernetes' go-yaml: ``yes``/``on``
are booleans) with three changes: timestamps stay strings, ``=`` is a plain
string, and a key repeated in one mapping is an error (as ``kubectl`` reports).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode
from yaml.reader import ReaderError

__all__ = ["Document", "SyntaxProblem", "read_documents"]

_DROPPED_TAGS = {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}


class _Loader(yaml.SafeLoader):
    """SafeLoader without timestamps or ``=``, rejecting duplicate keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue
            if duplicate:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


# A class attribute, as PyYAML keeps it (per class, not per instance).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Document:
    """One YAML document: its 1-based index in the file, its value, and the 1-based line
    where its content starts (for ``file:line`` locations, e.g. ``ambient analyze``)."""

    index: int
    value: object
    line: int | None = None


@dataclass(frozen=True)
class SyntaxProblem:
    """Why the rest of a file could not be read; ``line`` is None when unknown."""

    message: str
    line: int | None = None
    column: int | None = None
    document: int | None = None


def _marked(err: yaml.MarkedYAMLError) -> SyntaxProblem:
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    message = f"invalid YAML: {problem}"
    if err.context and err.problem:
        message += f" ({err.context}"
        ctx = err.context_mark
        if (
            ctx is not None
            and mark is not None
            and (ctx.line, ctx.column) != (mark.line, mark.column)
        ):
            message += f" started at line {ctx.line + 1}, column {ctx.column + 1}"
        message += ")"
    if "'\\t'" in problem:
        message += "; indent with spaces, not tabs"
    if mark is None:
        return SyntaxProblem(message)
    return SyntaxProblem(message, mark.line + 1, mark.column + 1)


def _reader(err: ReaderError, text: str) -> SyntaxProblem:
    position = min(max(err.position, 0), len(text))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    char = err.character
    code = ord(char) if isinstance(char, str) and len(char) == 1 else char
    shown = f"#x{code:04x}" if isinstance(code, int) else repr(code)
    return SyntaxProblem(
        f"invalid YAML: unacceptable character {shown}: {err.reason}", line, column
    )


def read_documents(text: str) -> tuple[list[Document], SyntaxProblem | None]:
    """Parse every document of ``text``; on a syntax error, the documents before it and the error."""
    documents: list[Document] = []
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        # ``yaml.load_all`` unrolled, to keep each document's first line.
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1 if node is not None else None
            value = loader.construct_document(node)
            documents.append(Document(len(documents) + 1, value, line))
    except ReaderError as err:
        return documents, _reader(err, text)
    except yaml.MarkedYAMLError as err:
        return documents, _marked(err)
    except yaml.YAMLError as err:
        return documents, SyntaxProblem(f"invalid YAML: {err}", document=len(documents) + 1)
    except RecursionError:
        return documents, SyntaxProblem(
            "invalid YAML: nested too deeply", document=len(documents) + 1
        )
    finally:
        if loader is not None:
            loader.dispose()
    return documents, None
