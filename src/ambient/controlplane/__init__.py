"""The control plane (istiod's job): config store, ambient index, xDS server and CA service."""
