"""Evaluations the report tests render: one with every section, one with attacks only, and three runs of
different defenses side by side in a multirun-like directory."""

import shutil

import pytest

from robustlab.evaluate import evaluate
from tests.helpers import make_cfg
from tests.regression.cases import FIXTURES, checkpoint


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory):
    """Copies of the fixture checkpoints used here (coverage caches its profile next to a checkpoint)."""
    root = tmp_path_factory.mktemp("report_fixtures")
    for defense in ("feature_squeezing", "standard", "pgd_at", "trades"):
        shutil.copytree(FIXTURES / defense, root / defense)
    return root


@pytest.fixture(scope="session")
def full_run(fixtures, tmp_path_factory):
    """A detector (feature squeezing) under suite=full with a baseline: attacks with every attack-utility metric,
    checks, curves, corruption, coverage, structure, defense utility and detection; 20 test images."""
    out = tmp_path_factory.mktemp("full_run")
    overrides = [
        f"ckpt={checkpoint('feature_squeezing', fixtures)}",
        "logger=none",
        "progress=false",
        "data.test_size=20",
        "suite=full",
        f"baseline={checkpoint('standard', fixtures)}",
    ]
    return evaluate(make_cfg("eval", out, overrides)), out


@pytest.fixture(scope="session")
def attacks_run(fixtures, tmp_path_factory):
    """The standard model under the default attacks alone (no checks): 20 test images."""
    out = tmp_path_factory.mktemp("attacks_run")
    overrides = [
        f"ckpt={checkpoint('standard', fixtures)}",
        "logger=none",
        "progress=false",
        "data.test_size=20",
        "evaluations.checks=null",
    ]
    return evaluate(make_cfg("eval", out, overrides)), out


DEFENSES = ("standard", "pgd_at", "trades")


@pytest.fixture(scope="session")
def three_runs(fixtures, tmp_path_factory):
    """The standard, PGD-AT and TRADES fixture models under the default attacks, 40 test images each, written to
    ``<root>/<0|1|2>`` as a Hydra multirun would; returns ``(root, {defense: report})``."""
    root = tmp_path_factory.mktemp("multirun")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    reports = {}
    for i, defense in enumerate(DEFENSES):
        overrides = [f"ckpt={checkpoint(defense, fixtures)}", "logger=none", "progress=false", "data.test_size=40"]
        reports[defense] = evaluate(make_cfg("eval", root / str(i), overrides))
    return root, reports
