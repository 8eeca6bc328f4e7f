"""What the platform exports about itself to Prometheus beyond each component's own /metrics."""
