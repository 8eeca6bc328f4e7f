"""Dashboards as code: the committed Grafana dashboards, provisioning files and console pages
are what dashboards/definitions.py generates, and they are valid offline: Grafana's model (the
pinned grafana-foundation-sdk) reads each dashboard back unchanged, every panel is complete,
and every PromQL expression parses (promtool, Debian's prometheus package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the generator is a top-level package of the repository
    sys.path.insert(0, str(REPO))

from dashboards import consoles, generate  # noqa: E402
from dashboards.definitions import DASHBOARDS, DATASOURCE_UID, all_exprs  # noqa: E402
from grafana_foundation_sdk.models.dashboard import Dashboard as GrafanaModel  # noqa: E402

GRAFANA_JSON = sorted((REPO / generate.GRAFANA_DASHBOARDS).glob("*.json"))
CONSOLE_PAGES = sorted((REPO / generate.CONSOLES).glob("*.html"))
LIBRARIES = REPO / generate.CONSOLE_LIBRARIES
VARIABLE = re.compile(r"\$([A-Za-z_]\w*)")


def test_committed_files_are_what_the_definition_generates(tmp_path):
    written = generate.write(tmp_path)
    problems = []
    for path in written:
        committed = REPO / path
        if not committed.exists():
            problems.append(f"{path}: not committed")
        elif committed.read_bytes() != (tmp_path / path).read_bytes():
            problems.append(f"{path}: differs")
    stale = generate.stale(REPO, dict.fromkeys(written))
    problems += [f"{path}: no longer generated" for path in stale]
    assert not problems, "run `make dashboards` and commit the result:\n" + "\n".join(problems)


def test_one_json_file_and_one_console_page_per_dashboard():
    assert [p.stem for p in GRAFANA_JSON] == sorted(b.uid for b in DASHBOARDS)
    pages = {p.name for p in CONSOLE_PAGES}
    assert pages == {"index.html", *(consoles.page_name(b) for b in DASHBOARDS)}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", GRAFANA_JSON, ids=lambda p: p.stem)
def test_grafana_model_reads_the_dashboard_back_unchanged(path):
    data = _load(path)
    again = json.loads(json.dumps(GrafanaModel.from_json(data).to_json(), default=_to_json))
    assert again == data


def _to_json(value):
    return value.to_json()


@pytest.mark.parametrize("path", GRAFANA_JSON, ids=lambda p: p.stem)
def test_every_panel_is_complete(path):
    data = _load(path)
    assert data["uid"] == path.stem and data["title"]
    panels = data["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    variables = {v["name"] for v in data.get("templating", {}).get("list", [])}
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        assert panel["title"], panel
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("stat", "timeseries"), panel["type"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel
        assert panel["targets"], f"{panel['title']}: no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert target["expr"].strip(), panel["title"]
            unknown = set(VARIABLE.findall(target["expr"])) - variables
            assert not unknown, f"{panel['title']}: undefined variables {unknown}"
        if panel["type"] == "stat":
            assert len(panel["targets"]) == 1, f"{panel['title']}: a stat shows one query"


def test_provisioning_names_the_datasource_the_panels_use():
    files = REPO / generate.GRAFANA_FILES / "provisioning"
    datasources = yaml.safe_load((files / "datasources/gekko.yml").read_text())["datasources"]
    assert [(d["uid"], d["type"]) for d in datasources] == [(DATASOURCE_UID, "prometheus")]
    (provider,) = yaml.safe_load((files / "dashboards/gekko.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def _shipped_exprs() -> list[tuple[str, str]]:
    """Every query of the definition, and every one in the Grafana files (annotations too)."""
    found = all_exprs()
    for path in GRAFANA_JSON:
        data = _load(path)
        for panel in data["panels"]:
            where = f"{path.stem}: {panel['title']}"
            found += [(where, target["expr"]) for target in panel.get("targets", [])]
        for annotation in data.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                found.append((f"{path.stem}: annotation {annotation['name']}", annotation["expr"]))
    return found


def test_every_promql_expression_parses(tmp_path):
    """`promtool check rules` parses each expression as a recording rule: an offline parser."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: apt-get install prometheus (make test installs it)")
    exprs = _shipped_exprs()
    rules = [
        # A variable stands for a regex: its "All" value, `.+`, must parse in its place.
        {"record": f"dashboards:expr_{index}", "expr": VARIABLE.sub(".+", expr)}
        for index, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    where = "\n".join(f"dashboards:expr_{i} = {w}: {e}" for i, (w, e) in enumerate(exprs))
    assert checked.returncode == 0, f"{checked.stdout}{checked.stderr}\n{where}"
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def _sources() -> str:
    files = [*(REPO / "app/gekko").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def test_every_gekko_metric_is_one_the_platform_exports():
    """A typo in a gekko_* name would leave a panel empty for ever: each must be in the code."""
    sources = _sources()
    missing = set()
    for _, expr in _shipped_exprs():
        for name in re.findall(r"\bgekko_[a-z0-9_]+", expr):
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)
            if not re.search(rf"\b({name}|{base})\b", sources):
                missing.add(name)
    assert not missing, f"metrics no code exports: {sorted(missing)}"


def _defined_templates() -> set[str]:
    text = "".join(path.read_text() for path in LIBRARIES.glob("*.lib"))
    return set(re.findall(r'{{-?\s*define\s+"([^"]+)"', text))


@pytest.mark.parametrize("path", CONSOLE_PAGES, ids=lambda p: p.name)
def test_console_page_uses_only_templates_the_libraries_define(path):
    text = path.read_text()
    assert text.count("{{") == text.count("}}"), "unbalanced template delimiters"
    used = set(re.findall(r'{{-?\s*template\s+"([^"]+)"', text))
    assert used, "the page includes no library template"
    assert used <= _defined_templates(), used - _defined_templates()


def test_console_libraries_are_prom_lib_and_the_generated_menu():
    assert sorted(p.name for p in LIBRARIES.glob("*.lib")) == ["menu.lib", "prom.lib"]
    prom_lib = (LIBRARIES / "prom.lib").read_text()
    # prom.lib's "head" includes the navbar and menu that menu.lib defines.
    assert {"head", "prom_query_drilldown", "prom_content_head", "tail"} <= _defined_templates()
    assert {"navbar", "menu"} <= _defined_templates()
    assert "d3.layout.min.js" not in prom_lib.split("*/}}", 1)[1]  # Debian serves no such file
    menu = (LIBRARIES / "menu.lib").read_text()
    linked = set(re.findall(r'"_menuItem" \(args \. "([^"]+)"', menu))
    assert linked == {p.name for p in CONSOLE_PAGES}
