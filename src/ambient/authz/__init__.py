"""Authorization policy: Istio AuthorizationPolicy / PeerAuthentication semantics as pure functions."""
