"""mCE, RmCE and mFR against hand-computed values; streaming equals one batch."""

import pytest
import torch

from robustlab.corruptions import BENCHMARK
from robustlab.metrics import MCE, MFR, RmCE
from robustlab.metrics.functional import mean_corruption_error, mean_flip_rate, relative_mean_corruption_error

E = torch.tensor([[0.2, 0.4], [0.1, 0.3]])  # 2 corruptions x 2 severities
BASE = torch.tensor([[0.4, 0.6], [0.2, 0.2]])


def test_functional_by_hand():
    assert mean_corruption_error(E).item() == pytest.approx(0.25)
    # CE_1 = 0.6/1.0, CE_2 = 0.4/0.4 -> mean 0.8
    assert mean_corruption_error(E, BASE).item() == pytest.approx(0.8)
    # clean 0.1, base clean 0.1: (0.1+0.3)/(0.3+0.5)=0.5, (0.0+0.2)/(0.1+0.1)=1.0 -> 0.75
    assert relative_mean_corruption_error(E, torch.tensor(0.1), BASE, torch.tensor(0.1)).item() == pytest.approx(0.75)
    assert relative_mean_corruption_error(E, torch.tensor(0.1)).item() == pytest.approx(0.15)
    assert mean_flip_rate(torch.tensor([0.1, 0.3])).item() == pytest.approx(0.2)
    assert mean_flip_rate(torch.tensor([0.1, 0.3]), torch.tensor([0.2, 0.2])).item() == pytest.approx(1.0)


def _feed(metric, n_batches, names=None):
    """Predictions realising the error table E (model) and BASE (baseline) on 10 samples, clean errors 0.1,
    for the corruptions ``names`` (default: the metric's) at severities 1 and 2."""
    y = torch.zeros(10, dtype=torch.long)

    def preds(err):
        return (torch.arange(10) < round(float(err) * 10)).long()

    chunks = torch.arange(10).tensor_split(n_batches)
    for idx in chunks:
        metric.update(preds(0.1)[idx], y[idx], baseline_preds=preds(0.1)[idx])
        for i, c in enumerate(names or metric.corruptions):
            for s in range(2):
                metric.update(preds(E[i, s])[idx], y[idx], c, s + 1, baseline_preds=preds(BASE[i, s])[idx])
    return metric


@pytest.mark.parametrize("n_batches", [1, 3])
def test_metrics_stream(n_batches):
    names = ("fog", "snow")
    assert _feed(MCE(corruptions=names, severities=2), n_batches).compute().item() == pytest.approx(0.8)
    assert _feed(RmCE(corruptions=names, severities=2), n_batches).compute().item() == pytest.approx(0.75)


@pytest.mark.parametrize("n_batches", [1, 3])
def test_subset_of_corruptions_and_severities(n_batches):
    """2 of the 15 benchmark corruptions at 2 of 5 severities, plus a held-out one: the means run over exactly
    the evaluated benchmark cells, normalised by the baseline (held-out corruptions are tabulated only)."""
    table = BENCHMARK + ("spatter",)
    mce, rmce, plain = MCE(corruptions=table), RmCE(corruptions=table), MCE()
    y = torch.zeros(10, dtype=torch.long)
    for m in (mce, rmce):
        _feed(m, n_batches, names=("fog", "snow"))
        m.update(torch.ones(10, dtype=torch.long), y, "spatter", 3, baseline_preds=y)
    assert mce.compute().item() == pytest.approx(0.8)
    assert rmce.compute().item() == pytest.approx(0.75)
    assert mce.errors()[table.index("spatter"), 2].item() == 1.0
    for i, c in enumerate(("fog", "snow")):
        for s in range(2):
            plain.update((torch.arange(10) < round(float(E[i, s]) * 10)).long(), y, c, s + 1)
    assert plain.compute().item() == pytest.approx(0.25)


def test_incomplete_or_empty_table_is_nan_with_a_warning():
    y = torch.zeros(4, dtype=torch.long)
    gaps = MCE()
    gaps.update(y, y, "fog", 1)
    gaps.update(y, y, "snow", 2)
    with pytest.warns(RuntimeWarning, match="same severities"):
        assert torch.isnan(gaps.compute())
    held_out_only = MCE(corruptions=("spatter",))
    held_out_only.update(y, y, "spatter", 1)
    with pytest.warns(RuntimeWarning, match="no benchmark corruption"):
        assert torch.isnan(held_out_only.compute())


def test_unnormalised_without_baseline_and_held_out_ignored():
    m = MCE(corruptions=("fog",), severities=2)
    y = torch.zeros(4, dtype=torch.long)
    m.update(torch.tensor([1, 0, 0, 0]), y, "fog", 1)
    m.update(torch.tensor([1, 1, 0, 0]), y, "fog", 2)
    m.update(torch.tensor([1, 1, 1, 1]), y, "spatter", 1)
    assert m.compute().item() == pytest.approx(0.375)
    assert m.errors().tolist() == [[0.25, 0.5]]
    assert MCE.full_state_update is False and MCE.higher_is_better is False


def test_mfr_by_hand_and_streaming():
    # consecutive flips: [0,0,1,1] -> 1 of 3; [0,1,0,1] -> 3 of 3; noise vs first: [0,1,1,0] -> 2 of 3
    p = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]])
    one, two = MFR(perturbations=("rotate", "gaussian_noise")), MFR(perturbations=("rotate", "gaussian_noise"))
    one.update(p, "rotate")
    one.update(torch.tensor([[0, 1, 1, 0]]), "gaussian_noise")
    two.update(p[:1], "rotate")
    two.update(p[1:], "rotate")
    two.update(torch.tensor([[0, 1, 1, 0]]), "gaussian_noise")
    assert one.flip_probabilities().tolist() == pytest.approx([4 / 6, 2 / 3])
    assert one.compute().item() == pytest.approx(two.compute().item()) == pytest.approx(2 / 3)
    base = MFR(perturbations=("rotate",))
    base.update(p, "rotate", baseline_preds=torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]]))
    assert base.compute().item() == pytest.approx((4 / 6) / 1.0)
    subset = MFR()  # every perturbation declared, one evaluated: the mean runs over that one
    subset.update(p, "rotate", baseline_preds=torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]]))
    assert subset.compute().item() == pytest.approx(4 / 6)
