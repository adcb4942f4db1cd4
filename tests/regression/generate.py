"""Rebuild the regression fixtures: ``python -m tests.regression.generate [--reports-only]``.

Trains one tiny checkpoint per defense (``cases.DEFENSES``) into ``fixtures/<defense>/checkpoints/`` and
writes each case's ``report.json`` to ``reports/<case>.json``. Run it only when a change to the numbers is
intended, and say which in the commit."""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from robustlab.evaluate import evaluate
from robustlab.train import train
from tests.helpers import make_cfg
from tests.regression.cases import DEFENSES, FIXTURES, REPORTS, TRAIN, cases


def main(reports_only: bool = False) -> None:
    if not reports_only:
        shutil.rmtree(FIXTURES, ignore_errors=True)
        for defense, overrides in DEFENSES.items():
            out = FIXTURES / defense
            train(make_cfg("train", out, [f"defense={defense}", *TRAIN, *overrides]))
            for path in out.iterdir():
                if path.name != "checkpoints":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
    REPORTS.mkdir(parents=True, exist_ok=True)
    for case, overrides in cases().items():
        with tempfile.TemporaryDirectory() as tmp:
            report = evaluate(make_cfg("eval", Path(tmp), overrides))
        (REPORTS / f"{case}.json").write_text(json.dumps(report, indent=2) + "\n")
        print(case, "written", flush=True)


if __name__ == "__main__":
    main("--reports-only" in sys.argv)
