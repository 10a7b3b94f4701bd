"""AuthorizationPolicy and PeerAuthentication: specs checked by ``ambient.authz`` at load.

The objects stay ``GenericResource`` (the control plane translates them when
it indexes), but a policy that ``ambient.authz`` would refuse is refused here,
with its field path, so a bad policy never replaces a good one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ambient.authz.peerauth import translate_peer_authentication
from ambient.authz.translate import PolicyError, translate_authorization_policy
from ambient.config.frozen import FrozenMap
from ambient.config.meta import resource_schema
from ambient.config.resources import GenericResource
from ambient.config.schema import INVALID, AnyMapping, FieldPath, Invalid, Obj, Report

_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _field_path(text: str) -> FieldPath:
    """``spec.rules[0].from`` -> ``("rules", 0, "from")`` (relative to the spec)."""
    parts: list[str | int] = [int(i) if i else name for i, name in _PATH_PART.findall(text)]
    return tuple(parts[1:] if parts[:1] == ["spec"] else parts)


class _CheckedSpec(AnyMapping):
    """A spec kept as frozen YAML after a validator from ``ambient.authz`` accepted it."""

    def __init__(self, validate: Callable[[Mapping[str, Any]], object]) -> None:
        self.validate = validate

    def parse(
        self, value: object, at: FieldPath, report: Report
    ) -> FrozenMap[str, object] | Invalid:
        frozen = super().parse(value, at, report)
        if frozen is INVALID:
            return frozen
        assert isinstance(value, Mapping)
        try:
            self.validate(value)
        except PolicyError as exc:
            report.error((*at, *_field_path(exc.path)), exc.message)
            return INVALID
        return frozen


def _authorization_policy(spec: Mapping[str, Any]) -> object:
    return translate_authorization_policy("validation", "default", spec)


def _peer_authentication(spec: Mapping[str, Any]) -> object:
    return translate_peer_authentication("validation", "default", spec)


AUTHORIZATION_POLICY: Obj[GenericResource] = resource_schema(
    GenericResource, _CheckedSpec(_authorization_policy)
)
PEER_AUTHENTICATION: Obj[GenericResource] = resource_schema(
    GenericResource, _CheckedSpec(_peer_authentication)
)
