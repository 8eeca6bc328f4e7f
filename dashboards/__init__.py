"""Dashboards as code: one definition of the KPIs and panels (dashboards.definitions), rendered
as Grafana dashboards with their provisioning files (dashboards.grafana) and as Prometheus
console pages (dashboards.consoles). `make dashboards` (python -m dashboards) writes both."""
