"""Reports a detector's false-positive rate on clean test images and its detection rate on the
attack callback's adversarial examples."""
import lightning as L
import torch
from torch import nn
from torchmetrics import Metric

from robustlab.callbacks.attack_callback import AttackCallback
from robustlab.metrics.functional import ratio
from robustlab.utils import eval_mode, synced_states


class _FlagRate(Metric):
    """Share of inputs a detector flags, from sum-reduced counts (``flagged / total``)."""

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("flagged", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, flags: torch.Tensor) -> None:
        self.flagged += flags.sum()
        self.total += flags.numel()

    def compute(self) -> torch.Tensor:
        return ratio(self.flagged, self.total, "detection rate")


def find_detector(pl_module: nn.Module) -> nn.Module | None:
    """The module exposing ``detect``: the LightningModule itself or the model it wraps."""
    return next((m for m in (pl_module, getattr(pl_module, "model", None)) if hasattr(m, "detect")), None)


class DetectionCallback(L.Callback):
    """On each test batch, runs the model's ``detect`` on the clean images and on every attack's
    adversarial examples (``AttackCallback.last_batch``, so this callback must come after it).

    ``results``: ``threshold`` (a float, or a list for several scores), ``fpr`` (share of all clean
    test images flagged, with ``n``), and per attack ``detection_rate``: the share flagged among the
    successful adversarial examples of correctly classified clean images, ``n`` of them.
    """

    def __init__(self):
        super().__init__()
        self.results: dict = {}

    def on_test_epoch_start(self, trainer, pl_module):
        self.detector = find_detector(pl_module)
        self.source = next((c for c in trainer.callbacks if isinstance(c, AttackCallback)), None)
        names = list(self.source.attacks) if self.source is not None else []
        self.rates = nn.ModuleDict({"clean": _FlagRate(), **{name: _FlagRate() for name in names}}).to(pl_module.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.detector is None:
            return
        x, y, idx = batch[0], batch[1], batch[2]
        with eval_mode(pl_module), torch.no_grad():
            self.rates["clean"].update(self.detector.detect(x))
            if len(self.rates) == 1:
                return
            last = getattr(self.source, "last_batch", None)
            if last is None or not torch.equal(last["idx"].to(idx.device), idx):
                raise RuntimeError("DetectionCallback needs AttackCallback.last_batch for the current test batch; "
                                   "register the AttackCallback before it")
            clean_correct = last["clean_logits"].argmax(1).to(y.device) == y
            for name, x_adv in last["adv"].items():
                keep = last["success"][name].to(y.device) & clean_correct
                self.rates[name].update(self.detector.detect(x_adv[keep]))

    def on_test_epoch_end(self, trainer, pl_module):
        if self.detector is None:
            return
        threshold = self.detector.threshold.tolist()
        states = {name: synced_states(rate) for name, rate in self.rates.items()}

        def rate(name: str, what: str) -> float:
            return ratio(states[name]["flagged"], states[name]["total"], what).item()

        self.results = {
            "threshold": threshold[0] if len(threshold) == 1 else threshold,
            "fpr": rate("clean", "detector FPR"), "n_clean": int(states["clean"]["total"]),
            "attacks": {name: {"detection_rate": rate(name, f"{name} detection rate"), "n": int(states[name]["total"])}
                        for name in states if name != "clean"},
        }
        log = {"test/detection/fpr": self.results["fpr"],
               **{f"test/{name}/detection_rate": r["detection_rate"] for name, r in self.results["attacks"].items()}}
        pl_module.log_dict(log, sync_dist=False, rank_zero_only=False)
