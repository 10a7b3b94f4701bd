"""HBONE: HTTP/2 CONNECT tunnels in mutual TLS, as Istio ambient puts them on the wire (port 15008)."""
