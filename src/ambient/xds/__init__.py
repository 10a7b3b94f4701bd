"""Istio's xDS message layer: workload API, authorization, CA and discovery messages."""
