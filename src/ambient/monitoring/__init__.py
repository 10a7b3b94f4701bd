"""The control plane's monitoring port (15014): its own metrics and Prometheus service
discovery of the mesh's proxies, and the scrape configuration that uses them."""
