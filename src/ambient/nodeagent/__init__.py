"""Node agent (istio-cni's job): network namespaces and traffic redirection into ztunnel."""
