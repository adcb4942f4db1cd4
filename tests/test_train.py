"""train(): a defense trains, logs clean and robust validation accuracy, and saves a checkpoint
that rebuilds the model on its own."""

import torch

import robustlab
from robustlab.checkpoint import read_checkpoint
from robustlab.train import train
from tests.helpers import make_cfg


def test_training_logs_clean_and_robust_accuracy(pgd_at_run):
    summary, out = pgd_at_run
    metrics = summary["metrics"]
    for key in (
        "val/acc",
        "val/pgd_linf_val/robust_accuracy",
        "val/robust_acc",
        "test/acc",
        "test/pgd_linf_val/robust_accuracy",
    ):
        assert key in metrics, key
    assert metrics["val/acc"] > 0.5, "2 epochs of PGD-AT on 1000 digits should already learn something"
    assert (out / "summary.json").is_file()


def test_checkpoint_is_weights_only_and_self_describing(pgd_at_run):
    summary, _ = pgd_at_run
    ckpt = read_checkpoint(summary["checkpoint"])
    meta = ckpt["robustlab"]
    assert meta["defense"] == "pgd_at" and meta["model"]["_target_"] == "robustlab.models.MNISTCNN"
    assert meta["data"]["_target_"] == "robustlab.data.MNIST5k"
    model = robustlab.load_model(summary["checkpoint"])
    assert not model.training and not any(m.training for m in model.modules())
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_standard_defense_trains_a_usable_model(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    with torch.no_grad():
        assert (standard_model(x).argmax(1) == y).float().mean() > 0.9


def test_the_test_stage_of_a_randomised_defense_is_adaptive(tmp_path):
    """train.py's test stage attacks an RT model with EOT and scores it over eval_draws draws (its validation
    attacks stay plain and single-draw)."""
    summary = train(
        make_cfg(
            "train",
            tmp_path,
            [
                "defense=rt",
                "data.train_size=300",
                "data.val_size=50",
                "data.test_size=30",
                "trainer.max_epochs=1",
                "logger=none",
                "attack=[pgd_linf_val]",
                "eot_samples=2",
                "eval_draws=3",
            ],
        )
    )
    assert summary["adaptive"] == {"pgd_linf_val": summary["adaptive"]["pgd_linf_val"]}
    assert summary["adaptive"]["pgd_linf_val"].startswith("EOT(") and "n=2" in summary["adaptive"]["pgd_linf_val"]
    test = summary["test"]
    assert test["clean"]["draws"] == 3 and "robust_accuracy_worst_draw" in test["attacks"]["pgd_linf_val"]
