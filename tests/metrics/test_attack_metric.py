"""Every attack- and defense-utility metric: the same on one process or two, and streamed or in one batch."""

import math

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.utilities.data import dim_zero_sum

from robustlab.metrics import AAB, AAW, ACAC, ACTC, ASS, CAV, CCV, COS, CRR, CSR, NTE, PSD, RGB, RIC, ALDp, AttackMetric
from robustlab.success import attack_success
from tests.metrics.distributed import assert_same_on_two_processes

SIZES = (5, 3, 7, 2, 6)  # an odd number of unequal batches: rank 0 gets 18 samples, rank 1 gets 5


def all_metrics() -> MetricCollection:
    return MetricCollection(
        {
            "ACAC": ACAC(),
            "ACTC": ACTC(),
            "NTE": NTE(),
            "ALDp": ALDp(),
            "ALDp_raw": ALDp(normalized=False),
            "ASS": ASS(),
            "PSD": PSD(),
            "PSD_one_minus": PSD(sensitivity="one_minus"),
            "RGB": RGB(radius=0.5),
            "RIC": RIC(quality=55),
            "AAW": AAW(),
            "AAB": AAB(),
            "CAV": CAV(),
            "CRR": CRR(),
            "CSR": CSR(),
            "CCV": CCV(),
            "COS": COS(),
        },
        compute_groups=False,
    )


def _linear(seed: int, near: nn.Module | None = None) -> nn.Module:
    """A fixed linear 4-class model on 1x12x12 images; with ``near``, a perturbed copy of that one."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 4))
    with torch.no_grad():
        w = torch.randn(4, 144, generator=g) * 0.3
        model[1].weight.copy_(w if near is None else near[1].weight + 0.5 * w)
        model[1].bias.copy_(-model[1].weight.sum(1) / 2)
    return model.eval()


def _batches() -> list[dict]:
    """Smooth images (3x3 blocks) with noisy adversarial versions; 70% of labels are the model's prediction."""
    g = torch.Generator().manual_seed(0)
    model = _linear(1)
    defended = _linear(2, near=model)
    batches = []
    for n in SIZES:
        x = torch.rand(n, 1, 3, 3, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
        x_adv = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        with torch.no_grad():
            clean, adv, logits = model(x), model(x_adv), defended(x)
        y = torch.where(torch.rand(n, generator=g) < 0.7, clean.argmax(1), torch.randint(0, 4, (n,), generator=g))
        batches.append(
            dict(
                model=model,
                x=x,
                x_adv=x_adv,
                y=y,
                clean_logits=clean,
                adv_logits=adv,
                logits=logits,
                baseline_logits=clean,
            )
        )
    return batches


def _flat(result: dict) -> dict:
    """MetricCollection already flattens ALDp's dict into ALDp_L0, ALDp_L2, ALDp_Linf."""
    return {k: v.item() for k, v in result.items()}


def test_every_metric_is_the_same_on_two_processes():
    batches = _batches()
    single = _flat(assert_same_on_two_processes(all_metrics, batches))
    assert len(single) == 21 and not any(math.isnan(v) for v in single.values()), single
    n_success = sum(
        attack_success(b["clean_logits"].argmax(1), b["adv_logits"].argmax(1), b["y"]).sum().item() for b in batches
    )
    assert 0 < n_success < sum(SIZES) and 0 < single["RGB"] < 1 and 0 < single["CRR"] < single["CSR"]


def test_streaming_equals_one_batch():
    batches = _batches()
    streamed = all_metrics()
    for b in batches:
        streamed.update(**b)
    whole = all_metrics()
    whole.update(
        model=batches[0]["model"], **{k: torch.cat([b[k] for b in batches]) for k in batches[0] if k != "model"}
    )
    one, many = _flat(whole.compute()), _flat(streamed.compute())
    assert one.keys() == many.keys()
    for k in one:
        assert math.isclose(one[k], many[k], rel_tol=1e-9, abs_tol=1e-12), k


def test_states_are_sum_reduced_and_constant_size():
    for name, metric in all_metrics().items():
        assert isinstance(metric, AttackMetric) or name in {"CAV", "CRR", "CSR", "CCV", "COS"}
        assert metric.full_state_update is False and metric.higher_is_better is not None
        assert all(fx is dim_zero_sum for fx in metric._reductions.values()), name
        assert all(s.numel() <= 3 for s in metric.metric_state.values()), name


def test_every_metric_config_instantiates(tmp_path):
    from robustlab.tasks import make_metrics
    from tests.helpers import CONFIG_DIR, make_cfg

    names = sorted(p.stem for p in (CONFIG_DIR / "metric").glob("*.yaml"))
    cfg = make_cfg("eval", tmp_path, ["ckpt=x", f"metric=[{','.join(names)}]", "metric.rgb.radius=2"])
    metrics = make_metrics(cfg.metric)
    assert sorted(metrics) == names and all(isinstance(m, AttackMetric) for m in metrics.values())
    assert {type(m).__name__ for m in metrics.values()} == {"ACAC", "ACTC", "ALDp", "ASS", "PSD", "NTE", "RGB", "RIC"}
    assert metrics["rgb"].radius == 2.0 and metrics["ric"].quality == 90 and metrics["aldp"].normalized
