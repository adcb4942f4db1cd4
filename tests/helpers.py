"""Helpers shared by the tests: configs composed in-process and command-line runs."""

import contextlib
import io
import logging
import os
import runpy
import subprocess
import sys
import traceback
import warnings
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


def run_in_process(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python script args`` in this process, for runs that end in an error before any work: ``sys.argv`` set,
    stdout and stderr captured, the exit status read off ``SystemExit``, and Hydra's global state and the logging
    handlers it installed put back afterwards. The same output as :func:`run_cli`, without the ~13 s a fresh
    interpreter spends on imports; each script keeps real subprocess tests too."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    out, err, argv, code = io.StringIO(), io.StringIO(), sys.argv, 0
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sys.argv = [script, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                runpy.run_path(str(ROOT / script), run_name="__main__")
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess([sys.executable, script, *args], code, out.getvalue(), err.getvalue())


def run_cli(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python script args`` from the repository root, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )
