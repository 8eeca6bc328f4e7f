"""EC-SW-001: the application image build refuses packages that disagree, naming the conflict
(app/images/check-dependencies.sh, run by app/images/app.Dockerfile)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "app/images/check-dependencies.sh"


def check(venv: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run(
        ["sh", str(CHECK), str(venv)], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_consistent_environment_passes():
    run = check(Path(sys.prefix))  # this suite's own virtualenv
    assert run.returncode == 0, run.stderr


def test_a_package_whose_requirement_is_not_met_fails_the_build_naming_it(tmp_path):
    # As the application wheel would be if pyproject.toml asked for an httpx the runtime lacks.
    dist = tmp_path / "gekko_probe-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gekko-probe\nVersion: 0.1\nRequires-Dist: httpx>=99\n"
    )
    run = check(Path(sys.prefix), tmp_path)
    assert run.returncode == 1
    assert "dependency conflict in the image" in run.stderr
    assert "gekko-probe 0.1 has requirement httpx>=99, but you have httpx " in run.stderr
    assert "Make the pins agree (requirements/app.txt" in run.stderr


def test_the_image_checks_right_after_installing_the_wheel_without_its_dependencies():
    dockerfile = (REPO / "app/images/app.Dockerfile").read_text()
    install = dockerfile.index("pip install --no-index --no-cache-dir --no-deps")
    assert dockerfile.index("sh /tmp/check-dependencies.sh /opt/gekko") > install
    build = (REPO / "roles/app_image/tasks/build.yml").read_text()
    assert "{src: app/images/check-dependencies.sh, dest: app/check-dependencies.sh}" in build
