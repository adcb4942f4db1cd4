"""The defense-utility evaluation inside a real Trainer: equals the metrics computed directly; baseline required."""

import copy

import pytest
import torch

from robustlab import RobustlabError
from robustlab.evaluation import DefenseUtility
from robustlab.metrics import CAV, CCV, COS, CRR, CSR
from tests.evaluation.helpers import run_loop


def test_results_match_a_direct_computation(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    baseline = copy.deepcopy(standard_model)
    with torch.no_grad():
        for p in baseline.parameters():  # a visibly different model: some examples flip both ways
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    results = run_loop(
        standard_model, x, y, evaluations={"defense": DefenseUtility()}, batch_size=64, baseline=baseline
    ).results["test"]["defense"]
    with torch.no_grad():
        logits, base_logits = standard_model(x), baseline(x)
    expected = {}
    for name, metric in {"CAV": CAV(), "CRR": CRR(), "CSR": CSR(), "CCV": CCV(), "COS": COS()}.items():
        metric.update(logits, base_logits, y)
        expected[name] = metric.compute().item()
    # the loop forwards batches of 64, the direct computation one of 200: CPU kernels may round float32 logits
    # differently by batch size, so the confidence-based CCV and COS agree to float32 precision; one flipped
    # prediction would move a rate by 1/200
    assert results == pytest.approx({**expected, "n_samples": 200}, rel=1e-5)
    assert results["CRR"] > 0 and results["CSR"] > 0 and results["COS"] > 0


def test_missing_baseline_is_a_one_line_error(standard_model, mnist_test_batch):
    x, y = mnist_test_batch
    with pytest.raises(RobustlabError, match="baseline=PATH"):
        run_loop(standard_model, x[:8], y[:8], evaluations={"defense": DefenseUtility()})
    skipped = run_loop(standard_model, x[:8], y[:8], evaluations={"defense": DefenseUtility(required=False)})
    assert skipped.results["test"]["defense"] == {"skipped": "no baseline=PATH given"}
