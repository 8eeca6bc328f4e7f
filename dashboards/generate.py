"""Write the Grafana dashboards, Grafana provisioning files and Prometheus console pages.

    python -m dashboards               # into this repository (what `make dashboards` runs)
    python -m dashboards --out DIR     # into DIR, with the same relative paths
    python -m dashboards --check       # exit 1 if the committed files are not what it writes

The generated files are committed; tests/unit/test_dashboards.py fails when they drift.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dashboards import consoles, grafana
from dashboards.definitions import DASHBOARDS

REPO = Path(__file__).resolve().parents[1]
GRAFANA_FILES = Path("roles/grafana_provisioning/files")
GRAFANA_DASHBOARDS = GRAFANA_FILES / "dashboards"
CONSOLES = Path("roles/prometheus/files/consoles")
CONSOLE_LIBRARIES = Path("roles/prometheus/files/console_libraries")
# Directories whose files of these kinds are all generated: others there are stale.
OWNED = ((GRAFANA_DASHBOARDS, "*.json"), (CONSOLES, "*.html"))


def outputs() -> dict[Path, str]:
    """Relative path -> content of every generated file."""
    files: dict[Path, str] = {}
    for board in DASHBOARDS:
        files[GRAFANA_DASHBOARDS / f"{board.uid}.json"] = grafana.dashboard_json(board)
    files[GRAFANA_FILES / "provisioning/dashboards/gekko.yml"] = grafana.dashboards_provider()
    files[GRAFANA_FILES / "provisioning/datasources/gekko.yml"] = grafana.datasource()
    for name, content in consoles.pages().items():
        files[CONSOLES / name] = content
    files[CONSOLE_LIBRARIES / "menu.lib"] = consoles.menu_lib()
    return files


def stale(root: Path, files: dict[Path, str]) -> list[Path]:
    """Generated-kind files under root's owned directories that are no longer generated."""
    found = []
    for directory, pattern in OWNED:
        for path in sorted((root / directory).glob(pattern)):
            if path.relative_to(root) not in files:
                found.append(path.relative_to(root))
    return found


def differences(root: Path) -> list[str]:
    """What differs between root and a fresh generation (empty when up to date)."""
    files = outputs()
    problems = [f"{path}: stale, no longer generated" for path in stale(root, files)]
    for path, content in files.items():
        target = root / path
        if not target.exists():
            problems.append(f"{path}: missing")
        elif target.read_text(encoding="utf-8") != content:
            problems.append(f"{path}: differs")
    return problems


def write(root: Path) -> list[Path]:
    files = outputs()
    for path in stale(root, files):
        (root / path).unlink()
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return sorted(files)


def main(argv: list[str] | None = None) -> int:
    summary = __doc__.split("\n", 1)[0]
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=summary)
    parser.add_argument("--out", type=Path, default=REPO, help="root to write under (the repo)")
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences(args.out)
        for problem in problems:
            print(problem)
        if problems:
            print("the generated dashboards are out of date: run make dashboards")
        return 1 if problems else 0
    for path in write(args.out):
        print(path)
    return 0
