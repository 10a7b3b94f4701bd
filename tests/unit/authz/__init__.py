"""Tests of ambient.authz: L4 AuthorizationPolicy and PeerAuthentication for ztunnel."""
