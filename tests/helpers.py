"""Helpers shared by the tests: configs composed in-process and command-line runs."""

import os
import subprocess
import sys
from pathlib import Path

from robustlab.cli import compose_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
# Small settings that keep each run to seconds on 2 CPU cores.
TINY = [
    "data.train_size=1000",
    "data.val_size=200",
    "data.test_size=200",
    "trainer.max_epochs=2",
    "logger=none",
    "defense.attack.steps=3",
]


def make_cfg(name: str, out_dir: Path, overrides: list[str]):
    """Compose ``configs/<name>.yaml`` as the command line would, writing into ``out_dir``."""
    return compose_config(name, [f"paths.output_dir={out_dir}", *overrides])


def run_cli(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python script args`` from the repository root, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )
