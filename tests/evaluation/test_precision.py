"""Reduced-precision attacks (``precision=bf16-mixed``) with every success re-checked in float32, and attacks on a
``torch.compile``-d model (``compile=``)."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.attacks.base import AttackResult
from robustlab.checkpoint import build_model, read_checkpoint
from robustlab.cli import robustlab_cause
from robustlab.evaluate import evaluate
from robustlab.evaluation.loop import EvaluationLoop, autocast_dtype, rechecked
from robustlab.train import train
from tests.helpers import make_cfg
from tests.regression.cases import checkpoint

COMMON = ["logger=none", "progress=false", "data.test_size=60", "save_adv=true", "attack.pgd_linf.steps=10"]


def _run(tmp_path, name: str, *overrides: str) -> dict:
    return evaluate(make_cfg("eval", tmp_path / name, [f"ckpt={checkpoint('standard')}", *COMMON, *overrides]))


def _saved(tmp_path, name: str, attack: str) -> dict:
    return torch.load(tmp_path / name / "adv" / f"{attack}.pt", weights_only=True)


def _float32_predictions(x: torch.Tensor) -> torch.Tensor:
    model = build_model(read_checkpoint(checkpoint("standard"))).eval()
    with torch.no_grad():
        return model(x).argmax(1)


def test_bf16_attacks_count_only_the_successes_float32_confirms(tmp_path):
    full, half = _run(tmp_path, "fp32"), _run(tmp_path, "bf16", "precision=bf16-mixed")
    assert half["precision"] == "bf16-mixed" and full["precision"] == "32-true"
    assert half["clean"] == full["clean"], "the clean pass stays in float32"
    for attack in ("fgsm", "pgd_linf"):
        a, b = _saved(tmp_path, "fp32", attack), _saved(tmp_path, "bf16", attack)
        assert not torch.equal(a["x_adv"], b["x_adv"]), "the gradient steps ran in bfloat16"
        pred = _float32_predictions(b["x_adv"])
        assert torch.equal(b["adv_pred"], pred)
        assert torch.equal(b["success"], (b["clean_pred"] == b["y"]) & (pred != b["y"]))
        assert abs(half["attacks"][attack]["robust_accuracy"] - full["attacks"][attack]["robust_accuracy"]) <= 0.1
        assert 0 < half["attacks"][attack]["robust_accuracy"] < half["clean"]["CA"]


def test_a_success_float32_does_not_confirm_is_dropped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.rand(20, 1, 3, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:5] = (y[:5] + 1) % 3  # misclassified by float32 already: their successes stand
    claimed = AttackResult(x, torch.zeros(20, 3, dtype=torch.bfloat16), torch.ones(20, dtype=torch.bool), seconds=1.0)
    result = rechecked(model, claimed, y)
    assert result.success.tolist() == [True] * 5 + [False] * 15
    assert result.logits.dtype == torch.float32 and torch.equal(result.logits, model(x).detach())
    assert result.seconds >= 1.0
    targeted = rechecked(model, AttackResult(x, claimed.logits, claimed.success, target=y), y)
    assert not targeted.success[:5].any() and targeted.success[5:].all()


def test_clean_logits_of_a_mixed_precision_step_are_computed_again_in_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.rand(8, 1, 3, 4)
    loop = EvaluationLoop(precision="bf16-mixed")
    logits, _ = loop._clean(model, {"logits": model(x).bfloat16()}, x)
    assert logits.dtype == torch.float32 and torch.equal(logits, model(x))
    kept = model(x)
    assert loop._clean(model, {"logits": kept}, x)[0] is kept, "a float32 step's logits are used as they are"


def test_a_precision_attacks_cannot_run_in_is_a_one_line_error():
    assert autocast_dtype("bf16-mixed") is torch.bfloat16 and autocast_dtype(32) is None
    with pytest.raises(Exception) as err:
        autocast_dtype("bf16-true")
    assert "use one of 32, 32-true, bf16-mixed" in str(robustlab_cause(err.value))


def test_training_in_bf16_mixed_keeps_float32_weights_and_rechecks_its_test_attacks(tmp_path):
    sizes = ["data.train_size=1000", "data.val_size=50", "data.test_size=50", "logger=none", "attack=[fgsm]"]
    overrides = ["defense=fgsm_at", "model._target_=tests.regression.tiny.TinyCNN", "optimizer.lr=0.01", *sizes]
    overrides += ["trainer.max_epochs=1", "precision=bf16-mixed", "+trainer.enable_progress_bar=false"]
    summary = train(make_cfg("train", tmp_path, overrides))
    state = read_checkpoint(summary["checkpoint"])["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    report = evaluate(make_cfg("eval", tmp_path / "eval", [f"ckpt={summary['checkpoint']}", *sizes[2:]]))
    ours = json.loads(Path(summary["report"]).read_text())
    assert ours["precision"] == "bf16-mixed" and report["precision"] == "32-true"
    assert ours["clean"] == report["clean"], "the test stage's clean pass was redone in float32"
    assert report["clean"]["CA"] > 0.5


def test_compiled_attacks_give_the_eager_model_s_successes(tmp_path):
    eager, compiled = _run(tmp_path, "eager"), _run(tmp_path, "compiled", "compile=aot_eager")
    assert compiled["compile"] == "aot_eager"
    for attack in ("fgsm", "pgd_linf"):
        saved = _saved(tmp_path, "compiled", attack)
        pred = _float32_predictions(saved["x_adv"])
        assert torch.equal(saved["adv_pred"], pred)
        assert torch.equal(saved["success"], (saved["clean_pred"] == saved["y"]) & (pred != saved["y"]))
        a, b = eager["attacks"][attack], compiled["attacks"][attack]
        assert abs(a["robust_accuracy"] - b["robust_accuracy"]) <= 1 / 60


def test_compile_on_a_randomised_model_is_refused(tmp_path):
    cfg = make_cfg(
        "eval", tmp_path, [f"ckpt={checkpoint('rt')}", *COMMON[:3], "attack=[fgsm]", "compile=true", "eval_draws=2"]
    )
    with pytest.raises(Exception) as err:
        evaluate(cfg)
    assert "compile= is for deterministic models" in str(robustlab_cause(err.value))
