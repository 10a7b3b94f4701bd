"""The waypoint's routing engine: HTTPRoute, VirtualService and DestinationRule, compiled.

``build_router(config, services)`` returns a ``RouteTable`` (the ``Router`` of
``waypoint.model``); ``route(target, request)`` is a pure function of the
compiled table and the request (plus an injectable random source for weights).

The objects' types and schemas are ``ambient.config``'s (``httproute``,
``virtualservice``, ``destinationrule``, ``l7fields``, ``regex``); this package
compiles them. Modules: ``context`` (services, merged DestinationRules
``DestinationPolicy``, route conditions), ``match`` (compiled request matchers),
``filters`` (redirects, rewrites, header changes), ``services`` (the mesh's
services as routing sees them), ``gateway`` / ``istio`` (compiling each API),
``table`` (attachment, precedence, ``route``).
"""

from ambient.waypoint.routing.action import Rng
from ambient.waypoint.routing.context import RouteCondition
from ambient.waypoint.routing.services import MeshService
from ambient.waypoint.routing.table import RouteTable, build_router

__all__ = ["MeshService", "Rng", "RouteCondition", "RouteTable", "build_router"]
