"""The one definition of the platform's dashboards: KPIs, panels and their PromQL.

Both renderings read only this module: Grafana dashboards (dashboards.grafana) and Prometheus
console pages (dashboards.consoles). Change a panel here, then run `make dashboards`.

Conventions
- A panel is a `stat` (one number: its query must return at most one series) or a
  `timeseries` (one line per series of each query).
- `$name` in a query is a dashboard variable: a Grafana template variable (multi-value, "All"
  is `.+`), and the `?name=value` parameter of the console page (default `.+`). Use it inside a
  regex matcher only: `label=~"$name"`.
- A legend is Grafana's `legendFormat` (`{{label}}`); console graphs get it as `[[label]]`, which
  drop text after the last label, so put fixed text before the labels.
- `unit` is a Grafana unit id; dashboards.consoles maps each to the console's formatting.

Metrics (where they come from)
- gekko_http_requests_total{component,route,method,status_class} and
  gekko_http_request_duration_seconds{component,route,method}: every gateway and service
  process (gekko.metrics); jobs `gateway` and `services` (label `service`).
- gekko_kpi_*: the gateway's KPI snapshot (gekko.kpis), served on /dashboard/metrics; job
  `kpis`, scraped with the credential gekko.platform.prometheus writes.
- gekko_inference_*, gekko_gpu_*: the signals service (gekko.signals.telemetry).
- gekko_upstream_*, gekko_circuit_breaker_*, gekko_ratelimit_*: the gateway
  (gekko.gateway.telemetry); gekko_security_events_total{event}: every component.
- gekko_container_*{container,component,host}: job `containers`.
- gekko_deploy_*: the node exporter's textfile collector on the controller (job `node`).
- node_*: node exporter 1.5; pg_*: postgres exporter 0.11; redis_*: redis exporter 1.45.
Every target carries a `host` label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The Grafana datasource every panel uses (dashboards.grafana writes its provisioning file).
DATASOURCE_UID = "gekko-prometheus"
DATASOURCE_NAME = "Gekko Prometheus"
# Where Grafana finds Prometheus: the local inventory's Prometheus (127.0.0.1:9090).
PROMETHEUS_URL = "http://127.0.0.1:9090"
# The Grafana folder the provisioned dashboards land in.
GRAFANA_FOLDER = "Gekko"

Kind = Literal["stat", "timeseries"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    key: str  # stable, unique within its dashboard: the console element ids use it
    title: str
    kind: Kind
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    """A label to filter by: its values are those of `label` on `metric`."""

    name: str
    title: str
    metric: str
    label: str

    @property
    def grafana_query(self) -> str:
        return f"label_values({self.metric}, {self.label})"

    @property
    def values_expr(self) -> str:  # the console page lists the values with this query
        return f"count by ({self.label}) ({self.metric})"


@dataclass(frozen=True)
class Annotation:
    """Marks on every time series panel, where `expr` returns a series (Grafana only)."""

    name: str
    expr: str
    color: str


@dataclass(frozen=True)
class Dashboard:
    uid: str  # the Grafana uid, the JSON file's and the console page's name
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[Variable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    tags: tuple[str, ...] = field(default=())

    def panels(self) -> tuple[Panel, ...]:
        return tuple(panel for row in self.rows for panel in row.panels)


# ---------------------------------------------------------------- PromQL helpers


def _sel(**labels: str) -> str:
    """A label selector: `name="value"`, or `name=~"regex"` when the key ends in `_re`."""
    parts = []
    for name, value in labels.items():
        if name.endswith("_re"):
            parts.append(f'{name[:-3]}=~"{value}"')
        else:
            parts.append(f'{name}="{value}"')
    return "{" + ",".join(parts) + "}"


def _rate(metric: str, selector: str = "", by: str = "", window: str = "5m") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(rate({metric}{selector}[{window}]))"


def _quantile(q: float, metric: str, selector: str = "", by: str = "") -> str:
    grouping = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, {_rate(metric + '_bucket', selector, grouping)})"


def _ratio(numerator: str, denominator: str) -> str:
    """0 where the numerator has no series yet (no 5xx ever counted), and no series rather than
    NaN where the denominator is 0 (no traffic)."""
    return f"({numerator} or {denominator} * 0) / ({denominator} > 0)"


def _stat(key: str, title: str, expr: str, unit: str = "short", description: str = "") -> Panel:
    return Panel(key, title, "stat", (Query(expr),), unit, description)


def _graph(
    key: str, title: str, *queries: Query, unit: str = "short", description: str = ""
) -> Panel:
    return Panel(key, title, "timeseries", queries, unit, description)


HTTP = "gekko_http_requests_total"
LATENCY = "gekko_http_request_duration_seconds"
COMPONENT = Variable("component", "Service", HTTP, "component")
HOST = Variable("host", "Host", 'up{job="node"}', "host")

# Orders: POST /api/v1/trading/execute, as the trading service counts it.
ORDERS = _sel(component="trading", route="trading", method="POST")
ORDERS_OK = _sel(component="trading", route="trading", method="POST", status_class="2xx")
INFERENCE = _sel(component="signals", route="signals", method="POST")
SESSION_EVENTS = "login-success|logout|session-ended|token-refreshed"

GATEWAY = _sel(component="gateway")
GATEWAY_5XX = _sel(component="gateway", status_class="5xx")
GATEWAY_5XX_RATIO = _ratio(_rate(HTTP, GATEWAY_5XX), _rate(HTTP, GATEWAY))
DEPLOYS = Annotation(
    "Deploys", "changes(gekko_deploy_finished_timestamp_seconds[2m]) > 0", "orange"
)

# ---------------------------------------------------------------- business KPIs

BUSINESS = Dashboard(
    uid="gekko-business-kpis",
    title="Business KPIs",
    description="Orders, fills, users and sessions, model inference: what the platform is for.",
    tags=("business",),
    rows=(
        Row(
            "Availability",
            (
                _stat(
                    "trading-instances",
                    "Trading instances healthy",
                    'max(gekko_service_instances{service="trading",health="ok"})',
                    description="As the gateways see them: 0 means nobody can trade.",
                ),
                _stat(
                    "services-healthy",
                    "Services with a healthy instance",
                    'count(max by (service) (gekko_service_instances{health="ok"}) > 0)',
                ),
                _graph(
                    "instances",
                    "Healthy instances by service",
                    Query('max by (service) (gekko_service_instances{health="ok"})', "{{service}}"),
                ),
            ),
        ),
        Row(
            "Orders",
            (
                _stat(
                    "orders-rate",
                    "Orders per second",
                    _rate(HTTP, ORDERS),
                    "reqps",
                    "POST /api/v1/trading/execute handled by the trading service.",
                ),
                _stat(
                    "orders-success",
                    "Order success ratio",
                    _ratio(_rate(HTTP, ORDERS_OK), _rate(HTTP, ORDERS)),
                    "percentunit",
                    "Orders answered 2xx over all orders (4xx: refused by checks).",
                ),
                _stat(
                    "fills-rate",
                    "Fills per second",
                    "max(rate(gekko_kpi_orders_executed_total[5m]))",
                    "ops",
                ),
                _stat(
                    "fill-rate",
                    "Fill rate",
                    "max(gekko_kpi_fill_rate)",
                    "percentunit",
                    "Filled over submitted orders, since the KPI store began.",
                ),
                _stat(
                    "execution-p95",
                    "Execution latency p95",
                    "max(gekko_kpi_execution_latency_p95_ms) / 1000",
                    "s",
                    "Over the last 1000 executions.",
                ),
                _stat(
                    "notional-1h",
                    "Notional volume (1 h)",
                    "max(increase(gekko_kpi_notional_volume_usd_total[1h]))",
                    "currencyUSD",
                ),
                _graph(
                    "orders-by-outcome",
                    "Orders per second by status",
                    Query(_rate(HTTP, ORDERS, "status_class"), "{{status_class}}"),
                    unit="reqps",
                ),
                _graph(
                    "fills",
                    "Orders submitted and filled per second",
                    Query("max(rate(gekko_kpi_orders_submitted_total[5m]))", "submitted"),
                    Query("max(rate(gekko_kpi_orders_executed_total[5m]))", "filled"),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Users and sessions",
            (
                _stat("active-users", "Active users (15 min)", "max(gekko_kpi_active_users)"),
                _stat(
                    "sign-ins",
                    "Sign-ins per second",
                    _rate("gekko_security_events_total", _sel(event="login-success")),
                    "ops",
                    "Sessions started: successful logins.",
                ),
                _stat(
                    "registrations-24h",
                    "Registrations (24 h)",
                    "max(increase(gekko_kpi_registrations_total[24h]))",
                ),
                _graph(
                    "active-users-graph",
                    "Active users (15 min)",
                    Query("max(gekko_kpi_active_users)", "active users"),
                ),
                _graph(
                    "sessions",
                    "Session events per second",
                    Query(
                        _rate(
                            "gekko_security_events_total", _sel(event_re=SESSION_EVENTS), "event"
                        ),
                        "{{event}}",
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Inference",
            (
                _stat(
                    "inference-rate",
                    "Inference requests per second",
                    _rate(HTTP, INFERENCE),
                    "reqps",
                    "POST /api/v1/signals/predict[/batch].",
                ),
                _stat(
                    "inference-p99",
                    "Inference latency p99",
                    _quantile(0.99, "gekko_inference_latency_seconds"),
                    "s",
                    "Queued features to probabilities: batching wait plus forward pass.",
                ),
                _stat(
                    "batch-size",
                    "Mean batch size",
                    _ratio(
                        _rate("gekko_inference_batch_size_sum"),
                        _rate("gekko_inference_batch_size_count"),
                    ),
                ),
                _graph(
                    "predictions",
                    "Predictions per second by signal",
                    Query(_rate("gekko_inference_predictions_total", by="signal"), "{{signal}}"),
                    unit="ops",
                ),
                _graph(
                    "inference-latency",
                    "Inference latency",
                    Query(_quantile(0.5, "gekko_inference_latency_seconds"), "p50"),
                    Query(_quantile(0.99, "gekko_inference_latency_seconds"), "p99"),
                    unit="s",
                ),
                _graph(
                    "gpu-memory",
                    "GPU memory used",
                    Query(
                        "max by (host, device) (gekko_gpu_memory_used_bytes"
                        " / gekko_gpu_memory_total_bytes)",
                        "{{device}} {{host}}",
                    ),
                    unit="percentunit",
                    description="Only where the signals service runs on a GPU.",
                ),
            ),
        ),
    ),
)

# ---------------------------------------------------------------- golden signals

SERVICE = _sel(component_re="$component")
SERVICE_5XX = _sel(component_re="$component", status_class="5xx")
APP_TARGETS = _sel(job_re="gateway|services")

GOLDEN = Dashboard(
    uid="gekko-golden-signals",
    title="Golden signals",
    description="Traffic, errors, latency and saturation of the gateway and each service.",
    tags=("services",),
    variables=(COMPONENT,),
    annotations=(DEPLOYS,),
    rows=(
        Row(
            "Traffic and errors",
            (
                _stat("rate", "Requests per second", _rate(HTTP, SERVICE), "reqps"),
                _stat(
                    "errors",
                    "Error ratio (5xx)",
                    _ratio(_rate(HTTP, SERVICE_5XX), _rate(HTTP, SERVICE)),
                    "percentunit",
                ),
                _stat("up", "Instances up", f"sum(up{APP_TARGETS})"),
                _stat("down", "Instances down", f"sum(1 - up{APP_TARGETS})"),
                _graph(
                    "rate-by-service",
                    "Requests per second by service",
                    Query(_rate(HTTP, SERVICE, "component"), "{{component}}"),
                    unit="reqps",
                ),
                _graph(
                    "errors-by-service",
                    "5xx ratio by service",
                    Query(
                        _ratio(
                            _rate(HTTP, SERVICE_5XX, "component"), _rate(HTTP, SERVICE, "component")
                        ),
                        "{{component}}",
                    ),
                    unit="percentunit",
                ),
            ),
        ),
        Row(
            "Latency",
            (
                _stat("p50", "Latency p50", _quantile(0.5, LATENCY, SERVICE), "s"),
                _stat("p99", "Latency p99", _quantile(0.99, LATENCY, SERVICE), "s"),
                _graph(
                    "p50-by-service",
                    "Latency p50 by service",
                    Query(_quantile(0.5, LATENCY, SERVICE, "component"), "{{component}}"),
                    unit="s",
                ),
                _graph(
                    "p99-by-service",
                    "Latency p99 by service",
                    Query(_quantile(0.99, LATENCY, SERVICE, "component"), "{{component}}"),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Saturation",
            (
                _stat("cpu", "CPU (cores)", _rate("gekko_container_cpu_seconds_total", SERVICE)),
                _stat(
                    "memory",
                    "Memory used",
                    f"sum(gekko_container_memory_usage_bytes{SERVICE})",
                    "bytes",
                ),
                _stat("running", "Containers running", f"sum(gekko_container_running{SERVICE})"),
                _stat(
                    "restarts",
                    "Container restarts (1 h)",
                    f"sum(increase(gekko_container_restart_count{SERVICE}[1h]))",
                ),
                _graph(
                    "cpu-by-service",
                    "CPU by service (cores)",
                    Query(
                        _rate("gekko_container_cpu_seconds_total", SERVICE, "component"),
                        "{{component}}",
                    ),
                ),
                _graph(
                    "memory-by-service",
                    "Memory used of the limit by service",
                    Query(
                        f"max by (component) (gekko_container_memory_usage_bytes{SERVICE}"
                        f" / (gekko_container_memory_limit_bytes{SERVICE} > 0))",
                        "{{component}}",
                    ),
                    unit="percentunit",
                    description="Containers without a memory limit are left out.",
                ),
                _graph(
                    "outbox-by-service",
                    "Outbox backlog by service",
                    Query("max by (service) (gekko_outbox_pending_events)", "{{service}}"),
                    description="Events written but not yet published to their stream.",
                ),
            ),
        ),
        Row(
            "Gateway",
            (
                _stat(
                    "breakers-open",
                    "Circuit breakers open",
                    "sum(gekko_circuit_breaker_state == bool 2)",
                    description="Gauge: 0 closed, 1 half-open, 2 open.",
                ),
                _stat(
                    "ratelimited",
                    "Rate-limited per second",
                    _rate("gekko_ratelimit_rejections_total"),
                    "reqps",
                ),
                _graph(
                    "upstream-p99",
                    "Upstream latency p99 by service",
                    Query(
                        _quantile(0.99, "gekko_upstream_request_duration_seconds", by="service"),
                        "{{service}}",
                    ),
                    unit="s",
                ),
                _graph(
                    "rejections",
                    "Refused at the gateway per second",
                    Query(
                        _rate("gekko_ratelimit_rejections_total", by="scope"),
                        "rate limit {{scope}}",
                    ),
                    Query(
                        _rate("gekko_circuit_breaker_rejections_total", by="service"),
                        "breaker {{service}}",
                    ),
                    unit="reqps",
                ),
            ),
        ),
    ),
)

# ---------------------------------------------------------------- datastores

FS = _sel(host_re="$host", fstype_re="ext.|xfs|btrfs|zfs|vfat")  # real disks, not tmpfs/overlay

DATASTORES = Dashboard(
    uid="gekko-datastores",
    title="Datastores",
    description="PostgreSQL and Redis: up, connections against their limits, throughput.",
    tags=("datastores",),
    rows=(
        Row(
            "PostgreSQL",
            (
                _stat(
                    "pg-up",
                    "PostgreSQL up",
                    "min(pg_up)",
                    "none",
                    "1 when the exporter reaches the server, 0 when not.",
                ),
                _stat(
                    "pg-connections",
                    "Connections used",
                    "sum(pg_stat_database_numbackends) / max(pg_settings_max_connections)",
                    "percentunit",
                ),
                _stat(
                    "pg-commits", "Commits per second", _rate("pg_stat_database_xact_commit"), "ops"
                ),
                _graph(
                    "pg-backends",
                    "Backends by database",
                    Query("sum by (datname) (pg_stat_database_numbackends)", "{{datname}}"),
                    Query("max(pg_settings_max_connections)", "max_connections"),
                ),
                _graph(
                    "pg-transactions",
                    "Transactions per second",
                    Query(_rate("pg_stat_database_xact_commit"), "commit"),
                    Query(_rate("pg_stat_database_xact_rollback"), "rollback"),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Redis",
            (
                _stat("redis-up", "Redis up", "min(redis_up)", "none"),
                _stat("redis-clients", "Connected clients", "sum(redis_connected_clients)"),
                _stat(
                    "redis-clients-used",
                    "Clients used",
                    "sum(redis_connected_clients) / sum(redis_config_maxclients)",
                    "percentunit",
                ),
                _stat("redis-memory", "Memory used", "sum(redis_memory_used_bytes)", "bytes"),
                _stat(
                    "redis-commands",
                    "Commands per second",
                    _rate("redis_commands_processed_total"),
                    "ops",
                ),
                _graph(
                    "redis-clients-graph",
                    "Connected clients",
                    Query("sum by (host) (redis_connected_clients)", "{{host}}"),
                ),
                _graph(
                    "redis-memory-graph",
                    "Memory used",
                    Query("sum by (host) (redis_memory_used_bytes)", "{{host}}"),
                    unit="bytes",
                ),
                _graph(
                    "redis-commands-graph",
                    "Commands per second",
                    Query(_rate("redis_commands_processed_total", by="host"), "{{host}}"),
                    unit="ops",
                ),
            ),
        ),
    ),
)

# ---------------------------------------------------------------- hosts

NODE = _sel(host_re="$host")
IDLE = _sel(host_re="$host", mode="idle")

HOSTS = Dashboard(
    uid="gekko-hosts",
    title="Hosts",
    description="Every inventory host, from its node exporter: CPU, memory, disk and load.",
    tags=("hosts",),
    variables=(HOST,),
    rows=(
        Row(
            "Now",
            (
                _stat("hosts-up", "Hosts up", f"sum(up{_sel(job='node', host_re='$host')})"),
                _stat(
                    "cpu-busy",
                    "CPU busy",
                    f"1 - avg(rate(node_cpu_seconds_total{IDLE}[5m]))",
                    "percentunit",
                ),
                _stat(
                    "memory-used",
                    "Memory used",
                    f"1 - sum(node_memory_MemAvailable_bytes{NODE})"
                    f" / sum(node_memory_MemTotal_bytes{NODE})",
                    "percentunit",
                ),
                _stat(
                    "disk-fullest",
                    "Fullest filesystem",
                    f"max(1 - node_filesystem_avail_bytes{FS} / node_filesystem_size_bytes{FS})",
                    "percentunit",
                ),
                _stat(
                    "load-per-cpu",
                    "Load (1 min) per CPU",
                    f"max(node_load1{NODE} / on (host, instance)"
                    f" count by (host, instance) (node_cpu_seconds_total{IDLE}))",
                    "none",
                    "The busiest host's 1-minute load over its CPU count.",
                ),
            ),
        ),
        Row(
            "Over time",
            (
                _graph(
                    "cpu-by-host",
                    "CPU busy by host",
                    Query(
                        f"1 - avg by (host) (rate(node_cpu_seconds_total{IDLE}[5m]))", "{{host}}"
                    ),
                    unit="percentunit",
                ),
                _graph(
                    "memory-by-host",
                    "Memory used by host",
                    Query(
                        f"1 - sum by (host) (node_memory_MemAvailable_bytes{NODE})"
                        f" / sum by (host) (node_memory_MemTotal_bytes{NODE})",
                        "{{host}}",
                    ),
                    unit="percentunit",
                ),
                _graph(
                    "disk-by-mount",
                    "Filesystem used by mount point",
                    Query(
                        f"max by (host, mountpoint) (1 - node_filesystem_avail_bytes{FS}"
                        f" / node_filesystem_size_bytes{FS})",
                        "{{host}} {{mountpoint}}",
                    ),
                    unit="percentunit",
                ),
                _graph(
                    "load-by-host",
                    "Load (1 min) by host",
                    Query(f"max by (host) (node_load1{NODE})", "{{host}}"),
                ),
                _graph(
                    "disk-io-by-host",
                    "Disk busy by host",
                    Query(
                        f"max by (host) (rate(node_disk_io_time_seconds_total{NODE}[5m]))",
                        "{{host}}",
                    ),
                    unit="percentunit",
                    description="Time the busiest disk of each host spent on I/O.",
                ),
            ),
        ),
    ),
)

# ---------------------------------------------------------------- deploy history

DEPLOY_TS = "gekko_deploy_finished_timestamp_seconds"

DEPLOY_HISTORY = Dashboard(
    uid="gekko-deploy-history",
    title="Deploy history",
    description="Each deploy and rollback, its phases, next to the gateway's 5xx ratio.",
    tags=("deploys",),
    annotations=(DEPLOYS,),
    rows=(
        Row(
            "Deploys",
            (
                _stat("since-last", "Since the last deploy", f"time() - max({DEPLOY_TS})", "s"),
                _stat(
                    "last-duration", "Last deploy took", "max(gekko_deploy_duration_seconds)", "s"
                ),
                _stat("deploys-7d", "Deploys (7 d)", f"sum(changes({DEPLOY_TS}[7d]))"),
                _stat(
                    "failed-7d",
                    "Failed or rolled back (7 d)",
                    f'sum(changes({DEPLOY_TS}{{outcome=~"failed|rolled_back"}}[7d]))',
                ),
                _stat("gateway-5xx", "Gateway 5xx ratio", GATEWAY_5XX_RATIO, "percentunit"),
                _graph(
                    "deploys",
                    "Deploys finished by outcome",
                    Query(f"sum by (outcome) (changes({DEPLOY_TS}[5m]))", "{{outcome}}"),
                ),
                _graph(
                    "gateway-5xx-graph",
                    "Gateway 5xx ratio",
                    Query(GATEWAY_5XX_RATIO, "5xx ratio"),
                    unit="percentunit",
                ),
                _graph(
                    "phases",
                    "Phase durations of the last deploy",
                    Query("max by (phase) (gekko_deploy_phase_duration_seconds)", "{{phase}}"),
                    unit="s",
                ),
                _graph(
                    "durations",
                    "Deploy duration",
                    Query("max(gekko_deploy_duration_seconds)", "deploy"),
                    unit="s",
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (BUSINESS, GOLDEN, DATASTORES, HOSTS, DEPLOY_HISTORY)

# The console index page's table of scrape targets: the jobs, then each job's targets up / all.
TARGETS = "sum by (job) (up)"
TARGET_JOB_UP = 'sum(up{job="%s"})'
TARGET_JOB_ALL = 'count(up{job="%s"})'


def all_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every query: panels, variables' value lists, annotations, index."""
    found = [("index: jobs", TARGETS)]
    found += [(f"index: {q}", q % "prometheus") for q in (TARGET_JOB_UP, TARGET_JOB_ALL)]
    for board in DASHBOARDS:
        for panel in board.panels():
            found += [(f"{board.uid}: {panel.title}", q.expr) for q in panel.queries]
        found += [(f"{board.uid}: variable {v.name}", v.values_expr) for v in board.variables]
        found += [(f"{board.uid}: annotation {a.name}", a.expr) for a in board.annotations]
    return found
