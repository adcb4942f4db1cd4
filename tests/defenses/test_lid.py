"""LID: the MLE estimate by hand, one feature per layer, and a detector fitted on validation that
reloads from its checkpoint, flags PGD examples far above its clean false-positive rate."""

import copy
import math

import pytest
import torch

import robustlab
from robustlab import RobustlabError
from robustlab.attacks import FGSM, PGD
from robustlab.defenses import LID
from robustlab.defenses.lid import LIDDetector, lid_mle
from robustlab.evaluate import evaluate
from robustlab.models import MNISTCNN
from robustlab.train import train
from tests.helpers import make_cfg


def test_lid_mle_matches_hand_computation():
    query = torch.zeros(1, 2)
    reference = torch.tensor([[1.0, 0], [0, -2], [-3, 0], [0, 4], [10, 0], [0, 20]])  # distances 1, 2, 3, 4, 10, 20
    # LID = -(1/k sum_i log(r_i / r_k))^-1 over the k nearest.
    for k, dists in [(4, [1, 2, 3, 4]), (6, [1, 2, 3, 4, 10, 20]), (2, [1, 2])]:
        expected = -1 / (sum(math.log(r / dists[-1]) for r in dists) / k)
        assert lid_mle(query, reference, k).item() == pytest.approx(expected, rel=1e-12)
    # Points spread uniformly in a d-dimensional ball have LID close to d.
    torch.manual_seed(0)
    for d in (2, 8):
        ball = torch.randn(20000, d)
        ball = ball / ball.norm(dim=1, keepdim=True) * torch.rand(20000, 1) ** (1 / d)
        assert lid_mle(torch.zeros(1, d), ball, 500).item() == pytest.approx(d, rel=0.15)


def test_one_feature_per_layer_output():
    torch.manual_seed(0)
    net = MNISTCNN().eval()
    det = LIDDetector(net, k=5, n_reference=10)
    assert len(det.coef) == 15  # 4 convs + 6 ReLUs + 2 max-pools + 3 linear layers
    det.reference.copy_(torch.rand(10, 1, 28, 28))
    x = torch.rand(3, 1, 28, 28)
    features = det.features(x)
    with torch.no_grad():
        logits = lid_mle(net(x), net(det.reference), 5).float()
        first_conv = lid_mle(net.net[0](net.normalize(x)), net.net[0](net.normalize(det.reference)), 5).float()
    assert torch.allclose(features[:, -1], logits) and torch.allclose(features[:, 0], first_conv)
    with pytest.raises(RobustlabError, match="k <= n_reference"):
        LIDDetector(net, k=20, n_reference=10)


def test_fitted_on_validation_it_flags_pgd_far_above_its_clean_fpr(standard_model, mnist_test_batch):
    x, y = mnist_test_batch  # 20 per class: the first 10 of each class to fit on, the rest to test
    fit = torch.arange(200) % 20 < 10
    module = LID(
        copy.deepcopy(standard_model),
        {"fgsm": FGSM(eps=0.3), "pgd": PGD(eps=0.3, step=0.05, steps=5)},
        k=20,
        n_reference=40,
        fpr=0.05,
    )
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))  # mix the classes in the reference set
    x_fit, y_fit = x[fit][order], y[fit][order]
    module.calibrate(x_fit, y_fit, torch.arange(100))
    det = module.inference
    assert torch.equal(det.reference, x_fit[:40])
    assert det.detect(x_fit[40:]).sum() == 3, "5% of the 60 clean non-reference images are flagged"
    x_test, y_test = x[~fit], y[~fit]
    x_adv = PGD(eps=0.3, step=0.02, steps=20)(det, x_test, y_test, seeds=torch.arange(100))
    with torch.no_grad():
        fooled = (det(x_test).argmax(1) == y_test) & (det(x_adv).argmax(1) != y_test)
    assert fooled.sum() > 50
    assert det.detect(x_adv[fooled]).float().mean() > det.detect(x_test).float().mean() + 0.2


def test_lid_trains_reloads_and_evaluates(tmp_path):
    summary = train(
        make_cfg(
            "train",
            tmp_path / "train",
            [
                "data=digits",
                "data.train_size=300",
                "data.val_size=160",
                "trainer.max_epochs=2",
                "optimizer.lr=0.003",
                "data.batch_size=20",
                "logger=none",
                "attack=[]",
                "test=false",
                "defense=lid",
                "defense.attacks.pgd.steps=2",
            ],
        )
    )
    model = robustlab.load_model(summary["checkpoint"])
    assert isinstance(model, LIDDetector) and model.coef.abs().sum() > 0 and model.std.min() > 0
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path / "eval",
            [f"ckpt={summary['checkpoint']}", "logger=none", "attack=[]", "progress=false", "data.test_size=100"],
        )
    )
    assert report["detection"]["n_clean"] == 100 and report["detection"]["threshold"] == model.threshold.item()
