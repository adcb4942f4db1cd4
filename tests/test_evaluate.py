"""evaluate(): a real Trainer.test with attacks, report contents, reproducibility, DDP equality."""

import json
import math

import pytest
import torch

from robustlab.evaluate import evaluate
from robustlab.metrics.functional import lp_distortion
from tests.helpers import make_cfg, run_cli

METRICS = "metric=[acac,actc,aldp,ass,psd,nte,rgb,ric]"
METRIC_KEYS = {"ACAC", "ACTC", "ALDp", "ASS", "PSD", "NTE", "RGB", "RIC"}


@pytest.fixture(scope="module")
def baseline_ckpt(pgd_at_run, standard_model, tmp_path_factory):
    """A checkpoint of the standard (undefended) model, in the PGD-AT run's format, as the DUE baseline."""
    ckpt = torch.load(pgd_at_run[0]["checkpoint"], map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {f"model.{k}": v for k, v in standard_model.state_dict().items()}
    path = tmp_path_factory.mktemp("baseline") / "standard.ckpt"
    torch.save(ckpt, path)
    return path


def _assert_same(one, two, path="report"):
    """Equal reports; floats up to summation order (float64 sums over differently split batches)."""
    if isinstance(one, dict):
        assert one.keys() == two.keys(), path
        for k in one:
            _assert_same(one[k], two[k], f"{path}.{k}")
    elif isinstance(one, float) and not math.isnan(one):
        assert two == pytest.approx(one, rel=1e-6, abs=1e-12), path
    else:
        assert one == two or (one != one and two != two), path


def _numbers(report: dict) -> dict:
    """The report without timings and process counts, which legitimately differ between runs."""
    drop = {"seconds", "CC", "fit_seconds", "world_size", "timings", "run"}

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in drop}
        return node

    return strip(report)


def test_evaluate_reports_what_training_logged(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    report = evaluate(make_cfg("eval", tmp_path, [f"ckpt={summary['checkpoint']}", "logger=none"]))
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["clean"]["n_samples"] == 200
    assert report["clean"]["CA"] == summary["metrics"]["test/acc"]
    assert set(report["attacks"]) == {"fgsm", "pgd_linf"}
    for name, result in report["attacks"].items():
        assert set(result) >= {"robust_accuracy", "MR", "n_samples", "seconds"}
        assert result["n_samples"] == 200 and result["seconds"] > 0
        assert 0 <= result["robust_accuracy"] <= report["clean"]["CA"]
    # PGD-40 is at least as strong as FGSM on every run; the worst case is no better than either.
    assert report["attacks"]["pgd_linf"]["robust_accuracy"] <= report["attacks"]["fgsm"]["robust_accuracy"] + 0.02
    assert report["worst_case"]["robust_accuracy"] <= min(r["robust_accuracy"] for r in report["attacks"].values())


def test_mr_relates_robust_accuracy_to_clean_accuracy(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path,
            [f"ckpt={summary['checkpoint']}", "logger=none", "attack=[pgd_linf]", "attack.pgd_linf.eps=0.1"],
        )
    )
    clean, result = report["clean"], report["attacks"]["pgd_linf"]
    n_clean_correct = round(clean["CA"] * clean["n_samples"])
    n_robust = round(result["robust_accuracy"] * result["n_samples"])
    assert result["MR"] == (n_clean_correct - n_robust) / n_clean_correct
    assert report["attack_params"]["pgd_linf"]["eps"] == 0.1


def test_same_seed_same_report(pgd_at_run, tmp_path):
    """The same seed gives the same report and the same PGD random starts; another seed other random starts
    (torch's generator reads a seed's low 32 bits only, so a seed kept in the high bits was silently ignored)."""
    summary, _ = pgd_at_run
    args = [f"ckpt={summary['checkpoint']}", "logger=none", "data.test_size=60", "save_adv=true"]
    first = evaluate(make_cfg("eval", tmp_path / "a", args))
    second = evaluate(make_cfg("eval", tmp_path / "b", args))
    other_seed = evaluate(make_cfg("eval", tmp_path / "c", [*args, "seed=1"]))
    assert _numbers(first) == _numbers(second)
    assert _numbers(first)["seed"] != _numbers(other_seed)["seed"]
    adv = {run: torch.load(tmp_path / run / "adv" / "pgd_linf.pt", weights_only=True) for run in "abc"}
    assert torch.equal(adv["a"]["x_adv"], adv["b"]["x_adv"])
    assert torch.equal(adv["a"]["x"], adv["c"]["x"])
    moved = (adv["a"]["x_adv"] - adv["c"]["x_adv"]).flatten(1).abs().amax(1) > 0
    assert moved.float().mean() > 0.9, "seed=1 should give other random starts than seed=0"


def test_ddp_evaluation_equals_single_process(pgd_at_run, baseline_ckpt, tmp_path):
    summary, _ = pgd_at_run
    # 101 samples in batches of 20: the two ranks get 51 and 50 samples and uneven batch counts.
    args = [
        f"ckpt={summary['checkpoint']}",
        "logger=none",
        "progress=false",
        "data.test_size=101",
        "data.eval_batch_size=20",
        "attack=[fgsm,pgd_linf]",
        "attack.pgd_linf.steps=10",
        METRICS,
        "suite=defense",
        f"baseline={baseline_ckpt}",
        "save_adv=true",
    ]
    single = run_cli("evaluate.py", *args, f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli("evaluate.py", *args, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "single" / "report.json").read_text())
    two = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["clean"]["n_samples"] == 101 and two["attacks"]["pgd_linf"]["n_samples"] == 101
    assert METRIC_KEYS <= set(one["attacks"]["pgd_linf"]) and one["defense"]["n_samples"] == 101
    _assert_same(_numbers(one), _numbers(two))
    for name in ("fgsm", "pgd_linf"):
        single_adv = torch.load(tmp_path / "single" / "adv" / f"{name}.pt", weights_only=True)
        ddp_adv = torch.load(tmp_path / "ddp" / "adv" / f"{name}.pt", weights_only=True)
        assert torch.equal(ddp_adv["idx"], torch.arange(101)), "every sample exactly once, sorted"
        for k in ("x", "y", "idx", "success", "clean_pred", "adv_pred"):
            assert torch.equal(single_adv[k], ddp_adv[k]), k
        torch.testing.assert_close(single_adv["x_adv"], ddp_adv["x_adv"])


def test_ddp_training_runs(tmp_path):
    result = run_cli(
        "train.py",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "data.train_size=400",
        "data.val_size=100",
        "data.test_size=100",
        "logger=csv",
        "defense.attack.steps=2",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test"]["clean"]["n_samples"] == 100
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "checkpoint:" in result.stdout


def test_corruption_suite_fills_the_report(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path,
            [
                f"ckpt={summary['checkpoint']}",
                "logger=none",
                "suite=corruption",
                "attack=[]",
                "data.test_size=20",
                "evaluations.corruption.corruptions=[gaussian_noise,contrast,spatter]",
                "evaluations.corruption.severities=[1,5]",
                "evaluations.corruption.perturbations=[gaussian_noise,translate]",
                "evaluations.corruption.sequence_length=3",
            ],
        )
    )
    corruption = report["corruption"]
    assert corruption["n_samples"] == 20 and set(corruption["errors"]) == {"gaussian_noise", "contrast", "spatter"}
    assert set(corruption["errors"]["contrast"]) == {1, 5}
    benchmark_errors = [corruption["errors"][c][s] for c in ("gaussian_noise", "contrast") for s in (1, 5)]
    assert corruption["mCE"] == sum(benchmark_errors) / 4, "unnormalised mCE: mean error over benchmark corruptions"
    assert 0 <= corruption["mFR"] <= 1 and set(corruption["flip_probabilities"]) == {"gaussian_noise", "translate"}
    assert corruption["errors"]["contrast"][5] >= corruption["errors"]["contrast"][1] - 0.1


def test_metrics_defense_utility_and_saved_examples(pgd_at_run, baseline_ckpt, tmp_path):
    summary, _ = pgd_at_run
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path,
            [
                f"ckpt={summary['checkpoint']}",
                "logger=none",
                "data.test_size=100",
                "attack=[fgsm]",
                METRICS,
                "metric.rgb.radius=1.0",
                "metric.aldp.normalized=false",
                "suite=defense",
                f"baseline={baseline_ckpt}",
                "save_adv=true",
            ],
        )
    )
    fgsm = report["attacks"]["fgsm"]
    assert set(fgsm) == {"robust_accuracy", "AAW", "MR", "n_samples", "seconds", "CC"} | METRIC_KEYS
    assert fgsm["AAW"] == fgsm["robust_accuracy"] and set(fgsm["ALDp"]) == {"L0", "L2", "Linf"}
    assert fgsm["ALDp"]["Linf"] == pytest.approx(0.3, abs=1e-6), "FGSM's raw Linf distortion is eps"
    assert 0 < fgsm["ASS"] < 1 and 0.1 <= fgsm["ACAC"] <= 1 and 0 <= fgsm["ACTC"] < fgsm["ACAC"]
    assert 0 <= fgsm["NTE"] <= 1 and 0 <= fgsm["RGB"] <= 1 and 0 <= fgsm["RIC"] <= 1 and fgsm["PSD"] > 0

    saved = torch.load(tmp_path / "adv" / "fgsm.pt", weights_only=True)
    ok = saved["success"]
    assert torch.equal(saved["idx"], torch.arange(100)) and 0 < ok.sum() < 100
    assert fgsm["MR"] == ok.sum().item() / (saved["clean_pred"] == saved["y"]).sum().item()
    recomputed = lp_distortion(saved["x"][ok], saved["x_adv"][ok], normalized=False).mean(0).tolist()
    assert [fgsm["ALDp"][k] for k in ("L0", "L2", "Linf")] == pytest.approx(recomputed, rel=1e-9)

    defense = report["defense"]
    assert set(defense) == {"CAV", "CRR", "CSR", "CCV", "COS", "n_samples"} and defense["n_samples"] == 100
    from robustlab import load_model

    with torch.no_grad():
        base_right = load_model(baseline_ckpt)(saved["x"]).argmax(1) == saved["y"]
    right = saved["clean_pred"] == saved["y"]
    assert defense["CAV"] == pytest.approx(report["clean"]["CA"] - base_right.double().mean().item())
    assert defense["CRR"] == pytest.approx((right & ~base_right).double().mean().item())
    assert defense["CSR"] == pytest.approx((~right & base_right).double().mean().item())
    assert defense["CCV"] >= 0 and defense["COS"] >= 0


def test_defense_suite_without_baseline_is_a_one_line_error(pgd_at_run, tmp_path):
    from robustlab.cli import robustlab_cause

    with pytest.raises(Exception) as info:
        evaluate(
            make_cfg(
                "eval", tmp_path, [f"ckpt={pgd_at_run[0]['checkpoint']}", "suite=defense", "attack=[]", "logger=none"]
            )
        )
    assert "fix: add baseline=PATH" in str(robustlab_cause(info.value))


def test_baseline_for_other_data_is_a_one_line_error(pgd_at_run, tmp_path):
    from robustlab.checkpoint import META_KEY
    from robustlab.cli import robustlab_cause
    from robustlab.models import MNISTCNN

    ckpt = torch.load(pgd_at_run[0]["checkpoint"], map_location="cpu", weights_only=True)
    ckpt[META_KEY]["model"]["num_classes"] = 5
    ckpt["state_dict"] = {f"model.{k}": v for k, v in MNISTCNN(num_classes=5).state_dict().items()}
    torch.save(ckpt, tmp_path / "five.ckpt")
    with pytest.raises(Exception) as info:
        evaluate(
            make_cfg(
                "eval",
                tmp_path,
                [
                    f"ckpt={pgd_at_run[0]['checkpoint']}",
                    "suite=defense",
                    "attack=[]",
                    "logger=none",
                    f"baseline={tmp_path / 'five.ckpt'}",
                ],
            )
        )
    message = str(robustlab_cause(info.value))
    assert "\n" not in message and "5 classes" in message and "fix: give baseline= a checkpoint trained on" in message
