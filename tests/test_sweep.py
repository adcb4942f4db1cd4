"""Scale-out through Hydra launchers: a 2-job training sweep and a 2-job evaluation sweep through submitit's local
launcher (each job its own process, as on a Slurm cluster), the comparison page built from each sweep directory, and
the Slurm launcher's configuration composed for a multi-node DDP job."""

import json
import re

import pytest

from tests.helpers import run_cli

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

TINY = ["data.train_size=300", "data.val_size=100", "trainer.max_epochs=1", "logger=none", "attack=[fgsm]"]


def _jobs(sweep) -> list[str]:
    """The submitit job ids whose logs the sweep directory holds."""
    logs = (sweep / ".submitit").rglob("*_log.out")
    return sorted({m.group(1) for p in logs if (m := re.match(r"(\d+_\d+)", p.name))})


def test_a_training_sweep_and_its_evaluation_sweep_through_submitit_local(tmp_path):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    trained = run_cli(
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "defense=standard,fgsm_at",
        *TINY,
        "data.test_size=100",
        f"hydra.sweep.dir={train_dir}",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Submitit 'local' sweep" in trained.stdout + trained.stderr
    assert len(_jobs(train_dir)) == 2
    summaries = [json.loads((train_dir / str(job) / "summary.json").read_text()) for job in range(2)]
    assert [s["defense"] for s in summaries] == ["standard", "fgsm_at"]
    for job, summary in enumerate(summaries):  # each job's test stage writes a report, as evaluate.py does
        report = json.loads((train_dir / str(job) / "report.json").read_text())
        assert summary["report"] == str(train_dir / str(job) / "report.json")
        assert report["checkpoint"] == summary["checkpoint"] and report["run"]["command"].startswith("python train.py")
        assert report["attacks"]["fgsm"]["robust_accuracy"] == summary["test"]["attacks"]["fgsm"]["robust_accuracy"]
    compared = run_cli("-m", "robustlab.report", str(train_dir))
    assert compared.returncode == 0, compared.stderr[-3000:]
    page = (train_dir / "comparison.html").read_text()
    assert all(f'href="{job}/report.html"' in page for job in range(2)) and "fgsm_at" in page

    ckpts = ",".join(s["checkpoint"] for s in summaries)
    evaluated = run_cli(
        "evaluate.py",
        "-m",
        "hydra/launcher=submitit_local",
        f"ckpt={ckpts}",
        "data.test_size=100",
        "logger=none",
        "attack=[fgsm]",
        f"hydra.sweep.dir={eval_dir}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert len(_jobs(eval_dir)) == 2
    reports = [json.loads((eval_dir / str(job) / "report.json").read_text()) for job in range(2)]
    assert [r["defense_name"] for r in reports] == ["standard", "fgsm_at"]

    compared = run_cli("-m", "robustlab.report", str(eval_dir))
    assert compared.returncode == 0, compared.stderr[-3000:]
    page = (eval_dir / "comparison.html").read_text()
    for job in range(2):
        assert f'href="{job}/report.html"' in page
    assert "standard" in page and "fgsm_at" in page


def test_the_slurm_launcher_composes_a_multi_node_ddp_job():
    """Nothing is submitted (no Slurm here): ``--cfg`` prints the composed launcher and trainer."""
    args = ["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4"]
    launcher = ["hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4"]
    shown = run_cli("train.py", *args, *launcher, "--cfg", "all")
    assert shown.returncode == 0, shown.stderr[-3000:]
    for line in ("nodes: 2", "tasks_per_node: 4", "gpus_per_node: 4", "SlurmLauncher", "num_nodes: 2", "strategy: ddp"):
        assert line in shown.stdout, line
