"""`make test` runs the e2e suite in two parts (GEKKO_E2E_PART, tests/e2e/conftest.py): together
they must hold every test once, the late part exactly the modules from test_key_rotation on."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def collected(part: str) -> list[str]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/e2e",
        ],
        cwd=REPO,
        # Not measured: pytest-cov would follow the child through its COV_CORE_* variables.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("COV_CORE")},
            "GEKKO_E2E_PART": part,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [line for line in run.stdout.splitlines() if "::" in line]


def test_the_two_parts_hold_every_e2e_test_once_and_the_late_one_the_redeploying_modules():
    # Three collections of some 6 s each (the e2e modules' imports), made side by side.
    with ThreadPoolExecutor(3) as pool:
        early, late, everything = pool.map(collected, ("early", "late", "all"))
    assert len(everything) > 50
    assert sorted(early + late) == sorted(everything), "a test in neither part, or in both"
    late_modules = {test.split("::")[0].rsplit("/", 1)[-1][: -len(".py")] for test in late}
    assert late_modules == {
        "test_key_rotation",
        "test_rollback",
        "test_catalogue_scale",
        "test_rollouts",
        "test_lifecycle",
        "test_chaos",
    }
    # `all` runs the early part first (the late one changes the stack under it).
    assert everything == early + late
