"""W&B tracking without a login or network: an offline run that holds the config and metrics."""

from robustlab.loggers import wandb_logged_in
from robustlab.train import train
from tests.helpers import TINY, make_cfg
from tests.wandb_records import logged


def test_offline_wandb_run_contains_logged_values(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in TINY if not o.startswith("logger=")] + ["trainer.max_epochs=1"]
    summary = train(make_cfg("train", tmp_path, overrides))
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    config, run_summary, history = logged(runs[0])
    assert config["defense"]["_target_"] == "robustlab.defenses.PGDAdversarialTraining"
    assert config["checkpoint"] == summary["checkpoint"] == run_summary["checkpoint"]
    for key in ("val/acc", "val/robust_acc", "test/acc", "test/pgd_linf_val/robust_accuracy", "train/loss"):
        assert key in history, key
    assert run_summary["test/acc"] == summary["metrics"]["test/acc"]


def test_login_detection_needs_no_network(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_logged_in()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_logged_in()
