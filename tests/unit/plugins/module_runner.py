"""Runs one of the collection's modules as Ansible does: a process reading its arguments from a
file, answering JSON on its standard output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

COLLECTIONS = Path(__file__).resolve().parents[3] / "collections"


def run_module(name: str, tmp_path: Path, args: dict) -> dict:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    done = subprocess.run(
        [sys.executable, "-m", f"ansible_collections.gekko.platform.plugins.modules.{name}",
         str(args_file)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(COLLECTIONS)),
        check=False,
    )  # fmt: skip
    return json.loads(done.stdout)
