"""Workload identity: SPIFFE ids, the certificate authority, workload certificates."""
