"""Configuration: Istio, Kubernetes and Gateway API YAML loaded into typed, validated objects."""
