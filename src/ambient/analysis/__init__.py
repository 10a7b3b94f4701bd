"""``ambient analyze``: istioctl analyze's job for this mesh's configuration.

``analyze(config)`` runs every analyzer (``analyzers``) over a loaded ``ConfigSet``
and returns ``Message`` objects (``messages``: Istio's codes and levels), sorted
by file, line and code. ``context`` holds the lookups analyzers share.
"""

from __future__ import annotations

from collections.abc import Iterable

from ambient.analysis.analyzers import ANALYZERS, Analyzer
from ambient.analysis.context import AnalysisContext
from ambient.analysis.messages import (
    SCHEMA_VALIDATION_ERROR,
    SCHEMA_WARNING,
    Level,
    Message,
    MessageType,
)
from ambient.config.configset import ConfigSet, Origin, Ref
from ambient.config.errors import Problem

__all__ = ["Level", "Message", "MessageType", "analyze", "in_namespace", "problem_message"]


def problem_message(problem: Problem, *, warning: bool) -> Message:
    """A loader problem as an analysis message (IST0106 error, IST0133 warning)."""
    ref = Ref(problem.kind, "", problem.name) if problem.kind else None
    origin = Origin(problem.file, problem.document or 0, line=problem.line)
    text = f"{problem.path}: {problem.message}" if problem.path else problem.message
    return Message(SCHEMA_WARNING if warning else SCHEMA_VALIDATION_ERROR, text, ref, origin)


def _key(message: Message) -> tuple[str, int, int, str, str]:
    origin = message.origin
    return (
        origin.file if origin else "",
        origin.document if origin else 0,
        -message.level,
        message.type.code,
        message.text,
    )


def analyze(config: ConfigSet, analyzers: Iterable[Analyzer] = ANALYZERS) -> list[Message]:
    """Every message about ``config``: its load warnings, then each analyzer's findings."""
    ctx = AnalysisContext(config)
    for warning in config.warnings:
        ctx.messages.append(problem_message(warning, warning=True))
    for analyzer in analyzers:
        analyzer(ctx)
    return sorted(ctx.messages, key=_key)


def in_namespace(message: Message, namespace: str) -> bool:
    """Whether ``message`` is about an object of ``namespace`` (or the Namespace itself)."""
    ref = message.ref
    if ref is None:
        return True
    if ref.kind == "Namespace":
        return ref.name == namespace
    return ref.namespace in (namespace, "")
