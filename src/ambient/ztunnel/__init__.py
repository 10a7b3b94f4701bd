"""ztunnel: the per-node L4 proxy (HBONE inbound/outbound, L4 authorization, metrics)."""
