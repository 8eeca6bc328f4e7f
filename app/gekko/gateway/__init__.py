"""API gateway: discovery, proxying, health and metrics, wired together in gateway.app."""
