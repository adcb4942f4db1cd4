"""evaluate(): a real Trainer.test with attacks, report contents, reproducibility, DDP equality."""
import json

from tests.helpers import make_cfg, run_cli
from robustlab.evaluate import evaluate


def _numbers(report: dict) -> dict:
    """The report without timings and process counts, which legitimately differ between runs."""
    drop = {"seconds", "world_size"}

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
    report = evaluate(make_cfg("eval", tmp_path, [f"ckpt={summary['checkpoint']}", "logger=none",
                                                  "attack=[pgd_linf]", "attack.pgd_linf.eps=0.1"]))
    clean, result = report["clean"], report["attacks"]["pgd_linf"]
    n_clean_correct = round(clean["CA"] * clean["n_samples"])
    n_robust = round(result["robust_accuracy"] * result["n_samples"])
    assert result["MR"] == (n_clean_correct - n_robust) / n_clean_correct
    assert report["attack_params"]["pgd_linf"]["eps"] == 0.1


def test_same_seed_same_report(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    args = [f"ckpt={summary['checkpoint']}", "logger=none", "data.test_size=60"]
    first = evaluate(make_cfg("eval", tmp_path / "a", args))
    second = evaluate(make_cfg("eval", tmp_path / "b", args))
    other_seed = evaluate(make_cfg("eval", tmp_path / "c", [*args, "seed=1"]))
    assert _numbers(first) == _numbers(second)
    assert _numbers(first)["seed"] != _numbers(other_seed)["seed"]


def test_ddp_evaluation_equals_single_process(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    # 101 samples in batches of 20: the two ranks get 51 and 50 samples and uneven batch counts.
    args = [f"ckpt={summary['checkpoint']}", "logger=none", "progress=false", "data.test_size=101",
            "data.eval_batch_size=20", "attack=[fgsm,pgd_linf]", "attack.pgd_linf.steps=10"]
    single = run_cli("evaluate.py", *args, f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli("evaluate.py", *args, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "single" / "report.json").read_text())
    two = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["clean"]["n_samples"] == 101 and two["attacks"]["pgd_linf"]["n_samples"] == 101
    assert _numbers(one) == _numbers(two)


def test_ddp_training_runs(tmp_path):
    result = run_cli("train.py", "trainer=ddp_cpu", "trainer.max_epochs=1", "data.train_size=400", "data.val_size=100",
                     "data.test_size=100", "logger=csv", "defense.attack.steps=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test"]["clean"]["n_samples"] == 100
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "checkpoint:" in result.stdout


def test_corruption_suite_fills_the_report(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    report = evaluate(make_cfg("eval", tmp_path, [
        f"ckpt={summary['checkpoint']}", "logger=none", "suite=corruption", "attack=[]", "data.test_size=20",
        "evaluations.corruption.corruptions=[gaussian_noise,contrast,spatter]", "evaluations.corruption.severities=[1,5]",
        "evaluations.corruption.perturbations=[gaussian_noise,translate]", "evaluations.corruption.sequence_length=3"]))
    corruption = report["corruption"]
    assert corruption["n_samples"] == 20 and set(corruption["errors"]) == {"gaussian_noise", "contrast", "spatter"}
    assert set(corruption["errors"]["contrast"]) == {1, 5}
    benchmark_errors = [corruption["errors"][c][s] for c in ("gaussian_noise", "contrast") for s in (1, 5)]
    assert corruption["mCE"] == sum(benchmark_errors) / 4, "unnormalised mCE: mean error over benchmark corruptions"
    assert 0 <= corruption["mFR"] <= 1 and set(corruption["flip_probabilities"]) == {"gaussian_noise", "translate"}
    assert corruption["errors"]["contrast"][5] >= corruption["errors"]["contrast"][1] - 0.1
