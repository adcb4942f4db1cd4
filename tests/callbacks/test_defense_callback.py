"""DefenseUtilityCallback inside a real Trainer: equals the metrics computed directly; baseline required."""
import copy

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from robustlab import RobustlabError
from robustlab.callbacks import DefenseUtilityCallback
from robustlab.data.base import Indexed, TensorPairs
from robustlab.defenses import RobustClassifier
from robustlab.metrics import CAV, CCV, COS, CRR, CSR


def test_results_match_a_direct_computation(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    baseline = copy.deepcopy(standard_model)
    with torch.no_grad():
        for p in baseline.parameters():   # a visibly different model: some examples flip both ways
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    callback = DefenseUtilityCallback(baseline)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[callback])
    trainer.test(RobustClassifier(standard_model), DataLoader(Indexed(TensorPairs(x, y)), batch_size=64), verbose=False)
    with torch.no_grad():
        logits, base_logits = standard_model(x), baseline(x)
    expected = {}
    for name, metric in {"CAV": CAV(), "CRR": CRR(), "CSR": CSR(), "CCV": CCV(), "COS": COS()}.items():
        metric.update(logits, base_logits, y)
        expected[name] = metric.compute().item()
    assert callback.results == pytest.approx({**expected, "n_samples": 200}, rel=1e-9)
    assert callback.results["CRR"] > 0 and callback.results["CSR"] > 0 and callback.results["COS"] > 0


def test_missing_baseline_is_a_one_line_error():
    with pytest.raises(RobustlabError, match="baseline=PATH"):
        DefenseUtilityCallback(None)
