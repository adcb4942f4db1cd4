"""The structure evaluation in a real Trainer (equal to direct metric runs, batch-size independent) and
report["structure"] from evaluate."""

import pytest
import torch

from robustlab.attacks import BIM, FGSM
from robustlab.evaluate import evaluate
from robustlab.evaluation import Structure
from robustlab.evaluation.loop import example_seeds
from robustlab.metrics import EBD, EBD2, ENI, NeuronSensitivity, NeuronUncertainty
from robustlab.metrics.coverage import layer_outputs, select_layers
from tests.evaluation.helpers import Tiny as _Tiny
from tests.evaluation.helpers import run_loop
from tests.evaluation.helpers import tiny_data as _data
from tests.helpers import make_cfg

EBD_ARGS = {"directions": 2, "step": 0.5, "max_distance": 6.0}
ENI_ARGS = {"eps": 0.1, "samples": 2}


def _ebd2():
    return {"num_classes": 3, "attack": BIM(eps=1.0, step=0.05, steps=4)}


def _run(batch_size):
    x, y = _data(24)
    structure = Structure(ebd=EBD_ARGS, ebd2=_ebd2(), eni=ENI_ARGS)
    loop = run_loop(_Tiny(), x, y, {"fgsm": FGSM(eps=0.2)}, {"structure": structure}, batch_size, wrap=False, seed=3)
    return loop.results["test"]["structure"]


def test_results_equal_direct_metric_runs_and_ignore_batch_size():
    results = _run(10)
    x, y = _data(24)
    net = _Tiny().model.eval()
    seeds = example_seeds(torch.arange(24), 3)
    layers = select_layers(net)
    clean, adv = layer_outputs(net, x, layers), layer_outputs(net, FGSM(eps=0.2)(net, x, y), layers)
    ebd, ebd2, eni = EBD(**EBD_ARGS), EBD2(**_ebd2()), ENI(**ENI_ARGS)
    ebd.update(net, x, seeds)
    ebd2.update(net, x, y, seeds)
    eni.update(net, x, y, seeds)
    sensitivity, uncertainty = NeuronSensitivity(list(layers)), NeuronUncertainty(list(layers))
    sensitivity.update(clean, adv)
    uncertainty.update(clean)
    assert results["EBD"] == pytest.approx(ebd.compute().item())
    assert results["EBD_censored"] == ebd.censored.item()
    assert results["EBD2"]["EBD2"] == pytest.approx(ebd2.compute()["EBD2"].item())
    assert results["EBD2"]["per_class"] == pytest.approx(ebd2.compute()["per_class"].tolist())
    assert results["ENI"] == pytest.approx(eni.compute().item())
    assert results["NeuronUncertainty"] == pytest.approx({k: v.item() for k, v in uncertainty.compute().items()})
    assert results["NeuronSensitivity"]["fgsm"] == pytest.approx(
        {k: v.item() for k, v in sensitivity.compute().items()}
    )
    assert results["n_samples"] == 24 and set(results["seconds"]) == {
        "NeuronUncertainty",
        "NeuronSensitivity",
        "EBD",
        "EBD2",
        "ENI",
    }
    again = _run(24)
    assert again.keys() == results.keys() and all(v > 0 for v in results["seconds"].values())
    assert again["EBD"] == pytest.approx(results["EBD"]) and again["ENI"] == pytest.approx(results["ENI"])
    assert again["EBD2"] == results["EBD2"]  # iteration counts: exact


@pytest.mark.filterwarnings("ignore:EBD2 class 0")  # the first 10 test digits are all zeros
def test_evaluate_reports_structure(pgd_at_run, tmp_path):
    summary, _ = pgd_at_run
    s = "evaluations.structure"
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path,
            [
                f"ckpt={summary['checkpoint']}",
                "logger=none",
                "progress=false",
                "suite=structure",
                "attack=[fgsm]",
                "data.test_size=10",
                f"{s}.ebd.directions=2",
                f"{s}.ebd.step=2.0",
                f"{s}.ebd2.attack.steps=3",
                f"{s}.eni.samples=2",
                f"{s}.layers.types=[Linear]",
            ],
        )
    )["structure"]
    layers = ["net.11", "net.14", "net.16"]
    assert list(report["NeuronUncertainty"]) == layers and list(report["NeuronSensitivity"]["fgsm"]) == layers
    assert all(v > 0 for v in report["NeuronSensitivity"]["fgsm"].values())
    assert report["n_samples"] == 10 and 0 < report["EBD"] <= 1.0
    assert len(report["EBD2"]["per_class"]) == 10 and 0 <= report["EBD2"]["nearest"] <= report["EBD2"]["EBD2"] <= 4
    assert report["ENI"] > 0 and report["ENI_skipped"] == 0


def test_a_vote_model_gets_coverage_and_says_why_sensitivity_does_not_apply(tmp_path):
    """RC's forward runs its network on many noisy copies: the layer readers take every call's outputs (they
    once stopped with "ran twice"), and neuron sensitivity, which pairs each clean image with its adversarial
    example, says it does not apply."""
    from tests.regression.cases import checkpoint

    s = "evaluations.structure"
    report = evaluate(
        make_cfg(
            "eval",
            tmp_path,
            [
                f"ckpt={checkpoint('rc')}",
                "logger=none",
                "progress=false",
                "suite=[coverage,structure]",
                "attack=[fgsm]",
                "data.test_size=20",
                f"{s}.ebd=false",
                f"{s}.ebd2=false",
                f"{s}.eni=false",
                "eval_draws=2",
                "eot_samples=2",
            ],
        )
    )
    assert report["coverage"]["n_samples"] == 20 and 0 < report["coverage"]["clean"]["KMNCov"] <= 1
    assert report["structure"]["n_samples"] == 20 and all(
        v > 0 for v in report["structure"]["NeuronUncertainty"].values()
    )
    assert report["structure"]["NeuronSensitivity"]["fgsm"].startswith("not applicable: the model runs its layers on")
