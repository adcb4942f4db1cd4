"""DEEPSEC's defense utility: the evaluated (defended) model against its raw baseline on the test batches."""
from pathlib import Path

import lightning as L
import torch
from torch import nn

from robustlab.checkpoint import model_on
from robustlab.errors import RobustlabError
from robustlab.metrics import CAV, CCV, COS, CRR, CSR
from robustlab.utils import eval_mode, step_logits, synced_states


class DefenseUtilityCallback(L.Callback):
    """On test batches ``(x, y, idx)``, runs the evaluated model and ``baseline`` (a raw model, or the path of
    its checkpoint, loaded weights-only) on the same clean images. At test end ``self.results`` holds CAV,
    CRR, CSR, CCV and COS (DEEPSEC Sec. II-D; see :mod:`robustlab.metrics.defense_utility`) and
    ``n_samples``, reduced over all processes. Without a baseline it raises, or, with ``required=False``
    (``suite=full``), reports ``{"skipped": ...}``."""

    def __init__(self, baseline: nn.Module | str | Path | None, required: bool = True):
        super().__init__()
        self.active = not (baseline is None or baseline == "")
        self.results: dict = {} if self.active else {"skipped": "no baseline=PATH given"}
        if not self.active and required:
            raise RobustlabError("the defense utility metrics need the raw model to compare with",
                                 "add baseline=PATH, the checkpoint of the undefended model")
        self.baseline_source, self.baseline = baseline, None

    def on_test_epoch_start(self, trainer, pl_module):
        if not self.active:
            return
        self.baseline = model_on(self.baseline_source, pl_module.device)
        self.metrics = nn.ModuleDict({"CAV": CAV(), "CRR": CRR(), "CSR": CSR(), "CCV": CCV(), "COS": COS()})
        self.metrics.to(pl_module.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not self.active:
            return
        x, y = batch[0], batch[1]
        with eval_mode(pl_module), torch.no_grad():
            logits, baseline_logits = step_logits(pl_module, outputs, x), self.baseline(x)
        for metric in self.metrics.values():
            metric.update(logits, baseline_logits, y)

    def on_test_epoch_end(self, trainer, pl_module):
        if not self.active:
            return
        n = int(synced_states(self.metrics["CAV"])["total"])
        self.results = {name: metric.compute().item() for name, metric in self.metrics.items()}
        self.results["n_samples"] = n
        pl_module.log_dict({f"test/defense/{k}": v for k, v in self.results.items() if k != "n_samples"},
                           sync_dist=False, rank_zero_only=False)
