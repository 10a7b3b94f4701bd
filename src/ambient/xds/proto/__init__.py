"""Generated protobuf messages and gRPC stubs of the xDS, workload and CA APIs (see generate)."""
