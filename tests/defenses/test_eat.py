"""EAT: the source of each batch's examples is drawn uniformly from the current and the static
models; examples are R+FGSM on that source with its own predictions as labels; the defense trains
with a static model from a checkpoint, reloads and evaluates."""

from collections import Counter

import pytest
import torch
from torch import nn

import robustlab
from robustlab.attacks import RFGSM
from robustlab.defenses import EAT
from robustlab.models import MNISTCNN
from tests.defenses.helpers import train_reload_evaluate


def _module(n_static: int = 2) -> EAT:
    torch.manual_seed(0)
    module = EAT(MNISTCNN(), eps=0.3, alpha=0.05)
    module._static = [MNISTCNN().eval().requires_grad_(False) for _ in range(n_static)]
    return module


def test_sources_are_drawn_uniformly_from_current_and_static_models():
    module = _module(2)
    torch.manual_seed(1)
    counts = Counter(id(module.source()) for _ in range(3000))
    ids = [id(module.model)] + [id(m) for m in module._static]
    assert set(counts) == set(ids)
    assert all(abs(counts[i] / 3000 - 1 / 3) < 0.04 for i in ids)


@pytest.mark.parametrize("k", [0, 1])
def test_examples_are_rfgsm_on_the_source_with_its_predictions(k, monkeypatch):
    module = _module(1)
    module.eval()
    source = [module.model, module._static[0]][k]
    monkeypatch.setattr(EAT, "source", lambda self: source)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.manual_seed(3)
    x_adv = module.adversarial(x, y)
    with torch.no_grad():
        predicted = source(x).argmax(1)
    torch.manual_seed(3)
    expected = RFGSM(eps=0.3, alpha_ratio=0.05 / 0.3)(source, x, predicted)
    assert torch.equal(x_adv, expected)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and not torch.equal(x_adv, x)
    assert all(p.grad is None for p in module.parameters())


def test_eat_trains_with_a_static_checkpoint_reloads_and_evaluates(tmp_path, pgd_at_run, mnist_test_batch):
    static = pgd_at_run[0]["checkpoint"]
    summary, _ = train_reload_evaluate(tmp_path, "eat", [f"defense.static=[{static}]"], *mnist_test_batch)
    assert summary["stages"] == {"static": [static]} and not (tmp_path / "train" / "static_0").exists()


def test_missing_static_models_are_refused():
    with pytest.raises(robustlab.RobustlabError, match="no static source models"):
        EAT(nn.Linear(2, 2)).on_fit_start()
    with pytest.raises(robustlab.RobustlabError, match="alpha"):
        EAT(nn.Linear(2, 2), eps=0.1, alpha=0.2)
