"""The Prometheus alert rules: promtool checks and unit-tests them; every alert is labelled,
annotated, unit-tested firing and quiet, and has its runbook (and every runbook an alert).

promtool comes from Debian's `prometheus` package, the version the Prometheus image runs; the
Makefile's system test dependencies install it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "roles/prometheus/files/rules"
TESTS_DIR = ROOT / "tests/promtool"
RUNBOOKS = ROOT / "docs/runbooks"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))

SEVERITIES = {"critical", "warning", "info"}
TEAMS = {"platform", "trading", "security", "data"}
# The prometheus role sets the external label; Alertmanager's messages carry the absolute URL.
RUNBOOK_URL = "{{{{ $externalLabels.runbook_base_url }}}}/{alert}.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: it comes from Debian's prometheus package, installed by "
            "make test's system dependencies (make .venv/.system-test-deps, or apt-get install "
            "prometheus with a policy-rc.d that keeps it from starting)",
            pytrace=False,
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - promtool from PATH, arguments are our own files
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in RULE_FILES:
        for group in load(path)["groups"]:
            for rule in group["rules"]:
                yield path, rule


def alerts() -> list[dict[str, Any]]:
    return [rule for _, rule in rules() if "alert" in rule]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in alerts()}


def alert_cases() -> Iterator[dict[str, Any]]:
    for path in TEST_FILES:
        for group in load(path)["tests"]:
            yield from group.get("alert_rule_test", [])


def test_there_are_rules_and_tests():
    assert RULE_FILES and TEST_FILES
    assert len(alert_names()) >= 20


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path):
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path):
    result = run_promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_labelled_and_annotated_with_its_runbook():
    problems = []
    for rule in alerts():
        name, labels, notes = rule["alert"], rule.get("labels", {}), rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r}")
        if labels.get("team") not in TEAMS:
            problems.append(f"{name}: team {labels.get('team')!r}")
        for key in ("summary", "description"):
            if not str(notes.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        if notes.get("runbook_url") != RUNBOOK_URL.format(alert=name):
            problems.append(f"{name}: runbook_url {notes.get('runbook_url')!r}")
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", name):
            problems.append(f"{name}: not a CamelCase name")
    assert problems == []


def test_every_alert_has_a_runbook_and_every_runbook_an_alert():
    runbooks = {path.stem for path in RUNBOOKS.glob("*.md")} - {"README"}
    assert sorted(alert_names() - runbooks) == [], "alerts without docs/runbooks/<alert>.md"
    assert sorted(runbooks - alert_names()) == [], "runbooks of no alert"
    index = (RUNBOOKS / "README.md").read_text()
    assert [n for n in sorted(runbooks) if f"({n}.md)" not in index] == [], "not in README.md"


def test_every_alert_and_severity_is_seen_firing_and_quiet():
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for case in alert_cases():
        expected = case.get("exp_alerts") or []
        if not expected:
            quiet.add(case["alertname"])
        for alert in expected:
            fired.add((case["alertname"], alert["exp_labels"]["severity"]))
    wanted = {(rule["alert"], rule["labels"]["severity"]) for rule in alerts()}
    assert sorted(wanted - fired) == [], "never seen firing"
    assert sorted(alert_names() - quiet) == [], "never seen quiet"
    assert sorted({name for name, _ in fired} - alert_names()) == [], "tests of no alert"


def test_recording_rules_are_tested_and_every_rule_file_is_loaded_by_a_test():
    recorded = {rule["record"] for _, rule in rules() if "record" in rule}
    tested: set[str] = set()
    loaded: set[Path] = set()
    for path in TEST_FILES:
        spec = load(path)
        loaded |= {(path.parent / name).resolve() for name in spec["rule_files"]}
        for group in spec["tests"]:
            tested |= {case["expr"] for case in group.get("promql_expr_test", [])}
    assert sorted(recorded - tested) == []
    assert sorted(p.name for p in set(RULE_FILES) - loaded) == []
