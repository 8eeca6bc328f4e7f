"""Grafana dashboards (JSON, built with grafana-foundation-sdk) and provisioning files from
dashboards.definitions."""

from __future__ import annotations

import json
from typing import Any

import yaml
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.definitions import (
    DATASOURCE_NAME,
    DATASOURCE_UID,
    GRAFANA_FOLDER,
    PROMETHEUS_URL,
    Dashboard,
    Panel,
)

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
GRID_WIDTH = 24
SIZES = {"stat": (4, 4), "timeseries": (12, 8)}  # kind -> (width, height) on the 24-wide grid
# Where an operator's Grafana reads the dashboard files (the provider's path).
DASHBOARDS_PATH = "/var/lib/grafana/dashboards/gekko"


class _Grid:
    """Places panels left to right, wrapping at the grid's width."""

    def __init__(self) -> None:
        self.x = self.y = self.line_height = 0

    def row(self) -> model.GridPos:
        self.newline()
        pos = model.GridPos(h=1, w=GRID_WIDTH, x=0, y=self.y)
        self.y += 1
        return pos

    def place(self, w: int, h: int) -> model.GridPos:
        if self.x + w > GRID_WIDTH:
            self.newline()
        pos = model.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.line_height = max(self.line_height, h)
        return pos

    def newline(self) -> None:
        if self.x:
            self.y += self.line_height
        self.x = self.line_height = 0


def _panel(panel: Panel, panel_id: int, pos: model.GridPos) -> Any:
    if panel.kind == "stat":
        built: Any = (
            stat.Panel()
            .graph_mode(common.BigValueGraphMode.AREA)
            .color_mode(common.BigValueColorMode.VALUE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        )
    else:
        built = timeseries.Panel().legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    built = built.id(panel_id).title(panel.title).datasource(DATASOURCE).unit(panel.unit)
    if panel.description:
        built = built.description(panel.description)
    for index, query in enumerate(panel.queries):
        target = (
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
            .expr(query.expr)
            .range()
        )
        if query.legend:
            target = target.legend_format(query.legend)
        built = built.with_target(target)
    return built.grid_pos(pos)


def dashboard(board: Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model (schemaVersion as the SDK writes it)."""
    built = (
        builders.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags(["gekko", *board.tags])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .readonly()
    )
    for variable in board.variables:
        built = built.with_variable(
            builders.QueryVariable(variable.name)
            .label(variable.title)
            .datasource(DATASOURCE)
            .query(variable.grafana_query)
            .multi(True)
            .include_all(True)
            .all_value(".+")
            .current(model.VariableOption(selected=True, text="All", value="$__all"))
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        )
    for annotation in board.annotations:
        built = built.annotation(
            builders.AnnotationQuery()
            .name(annotation.name)
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color(annotation.color)
            .expr(annotation.expr)
        )
    grid, panel_id = _Grid(), 0
    for row in board.rows:
        panel_id += 1
        built = built.with_row(builders.Row(row.title).id(panel_id).grid_pos(grid.row()))
        for panel in row.panels:
            panel_id += 1
            built = built.with_panel(_panel(panel, panel_id, grid.place(*SIZES[panel.kind])))
    return json.loads(json.dumps(built.build(), cls=JSONEncoder))


def dashboard_json(board: Dashboard) -> str:
    return json.dumps(dashboard(board), indent=2, ensure_ascii=False) + "\n"


class _IndentedDumper(yaml.SafeDumper):
    """Indents a list under its key, as yamllint (ansible-lint) expects."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _yaml(header: str, document: dict[str, Any]) -> str:
    body = yaml.dump(document, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False)
    return "---\n" + header + body


HEADER = "# Generated by `make dashboards` from dashboards/definitions.py: do not edit.\n"


def dashboards_provider() -> str:
    """Grafana's dashboard provider: the JSON files under DASHBOARDS_PATH, in one folder."""
    return _yaml(
        HEADER
        + "# Copy to /etc/grafana/provisioning/dashboards/, and the dashboards' JSON files to\n"
        + f"# {DASHBOARDS_PATH}/.\n",
        {
            "apiVersion": 1,
            "providers": [
                {
                    "name": "gekko",
                    "orgId": 1,
                    "folder": GRAFANA_FOLDER,
                    "type": "file",
                    "disableDeletion": True,
                    "allowUiUpdates": False,
                    "updateIntervalSeconds": 60,
                    "options": {"path": DASHBOARDS_PATH, "foldersFromFilesStructure": False},
                }
            ],
        },
    )


def datasource() -> str:
    """The Prometheus datasource every panel names by uid."""
    return _yaml(
        HEADER
        + "# Copy to /etc/grafana/provisioning/datasources/; set `url` to your Prometheus.\n",
        {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": DATASOURCE_NAME,
                    "uid": DATASOURCE_UID,
                    "type": "prometheus",
                    "access": "proxy",
                    "url": PROMETHEUS_URL,
                    "isDefault": True,
                    "editable": False,
                    "jsonData": {
                        "httpMethod": "POST",
                        "prometheusType": "Prometheus",
                        "prometheusVersion": "2.42.0",
                    },
                }
            ],
        },
    )
