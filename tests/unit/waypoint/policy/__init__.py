"""Tests of ambient.waypoint.policy: L7 authorization and RequestAuthentication."""
