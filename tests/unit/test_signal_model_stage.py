"""The image's signal-model stage trains from the files roles/app_image copies, and nothing else:
a module that training imports but that list misses would break the image build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD_TASKS = REPO / "roles/app_image/tasks/build.yml"


def training_sources() -> list[dict[str, str]]:
    tasks = yaml.safe_load(BUILD_TASKS.read_text())
    copies = [
        item
        for block in tasks
        for task in block.get("block", [])
        if "ansible.builtin.copy" in task
        for item in task.get("loop", [])
    ]
    return [c for c in copies if c["dest"].startswith("signals-src/")]


def test_training_runs_from_the_copied_sources_alone(tmp_path):
    sources = training_sources()
    assert sources, f"no signals-src copies found in {BUILD_TASKS}"
    for item in sources:
        dest = tmp_path / item["dest"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / item["src"], dest)
    src = tmp_path / "signals-src"
    # -I: no user site, no PYTHONPATH from outside; the copied tree comes first on sys.path.
    code = (
        f"import sys; sys.path.insert(0, {str(src)!r}); "
        "import gekko.signals.train as t; print(t.__file__); "
        "t.train(t.TrainConfig(samples=300, validation_samples=100, epochs=1))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(src))
