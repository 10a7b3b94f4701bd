"""Waypoint: the per-service L7 proxy (HTTP routing, L7 authorization, JWT, resilience)."""
