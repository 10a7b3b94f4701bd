"""Component tests of the node-bound certificate service over real gRPC and TLS."""
