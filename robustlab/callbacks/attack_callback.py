"""Runs attacks on validation/test batches and keeps exact, distributed-reducible results."""
import time

import lightning as L
import torch
from torch import nn
from tqdm.auto import tqdm

from robustlab.attacks.base import Attack
from robustlab.metrics import CA, MR
from robustlab.metrics.computation_cost import CC
from robustlab.metrics.functional import classification_accuracy, misclassification_ratio
from robustlab.utils import eval_mode, synced_states

STAGES = {"validate": "val", "test": "test"}


def _accuracy(states: dict[str, torch.Tensor]) -> float:
    return classification_accuracy(states["correct"], states["total"]).item()


class _AttackMetrics(nn.Module):
    def __init__(self):
        super().__init__()
        self.robust, self.mr, self.cost = CA(), MR(), CC()


class AttackCallback(L.Callback):
    """Attack every validation and/or test batch with each attack in ``attacks``.

    Per attack it reports ``robust_accuracy`` (share of all samples classified correctly both
    clean and under the attack), ``MR`` (DEEPSEC: share of clean-correct samples the attack
    misclassifies, or, for a targeted attack, moves to its target), ``n_samples`` and
    ``seconds`` (generation time summed over processes).
    ``worst_case`` counts a sample robust only if every attack failed on it.

    Random starts are seeded per sample (``seed`` and the sample's index), so results are the
    same for any batch size or number of processes. The model is attacked in eval mode; each
    module's own mode is restored afterwards. Needs ``Trainer(inference_mode=False)``.
    """

    def __init__(self, attacks: dict[str, Attack] | None = None, stages: tuple[str, ...] = ("validate", "test"),
                 seed: int = 0, progress: bool = True):
        super().__init__()
        self.attacks = dict(attacks or {})
        self.stages, self.seed, self.progress = tuple(stages), int(seed), progress
        self.metrics: dict[str, nn.ModuleDict] = {}
        self.results: dict[str, dict] = {}
        self._bars: list = []

    def _active(self, trainer: L.Trainer, stage: str) -> bool:
        return stage in self.stages and not trainer.sanity_checking

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        metrics = nn.ModuleDict({"clean": CA(), "worst_case": CA(),
                                 **{name: _AttackMetrics() for name in self.attacks}})
        self.metrics[stage] = metrics.to(pl_module.device)
        if stage == "test" and self.progress and trainer.is_global_zero:
            total = sum(trainer.num_test_batches)
            self._bars = [tqdm(total=total, desc=f"attack {name}", position=i, leave=True, dynamic_ncols=True)
                          for i, name in enumerate(self.attacks)]

    def _batch(self, trainer, pl_module, outputs, batch, stage: str) -> None:
        x, y, idx = batch[0], batch[1], batch[2]
        metrics = self.metrics[stage]
        with torch.no_grad():
            clean = outputs["preds"] if isinstance(outputs, dict) and "preds" in outputs else pl_module(x).argmax(1)
        metrics["clean"].update(clean, y)
        robust = clean == y
        seeds = idx.long() + (self.seed << 32)
        with eval_mode(pl_module):
            for bar, (name, attack) in zip(self._bars or [None] * len(self.attacks), self.attacks.items()):
                start = time.perf_counter()
                x_adv = attack(pl_module, x, y, seeds=seeds)
                seconds = time.perf_counter() - start
                with torch.no_grad():
                    adv = pl_module(x_adv).argmax(1)
                m = metrics[name]
                m.robust.update(torch.where(clean == y, adv, -1), y)
                m.mr.update(clean, adv, y, target=attack.last_target if attack.targeted else None)
                m.cost.update(seconds, len(y))
                robust &= adv == y
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(robust_acc=f"{m.robust.correct.item() / max(m.robust.total.item(), 1):.3f}")
        metrics["worst_case"].update(torch.where(robust, y, -1), y)

    def _finish(self, pl_module: L.LightningModule, stage: str) -> None:
        for bar in self._bars:
            bar.close()
        self._bars = []
        metrics = self.metrics.pop(stage)
        clean = synced_states(metrics["clean"])
        results = {"clean": {"CA": _accuracy(clean), "n_samples": int(clean["total"])}, "attacks": {}}
        for name in self.attacks:
            robust, mr, cost = (synced_states(m) for m in (metrics[name].robust, metrics[name].mr, metrics[name].cost))
            results["attacks"][name] = {
                "robust_accuracy": _accuracy(robust),
                "MR": misclassification_ratio(mr["fooled"], mr["clean_correct"]).item(),
                "n_samples": int(robust["total"]), "seconds": float(cost["seconds"])}
        if self.attacks:
            worst = synced_states(metrics["worst_case"])
            results["worst_case"] = {"robust_accuracy": _accuracy(worst), "n_samples": int(worst["total"]),
                                     "attacks": list(self.attacks)}
        self.results[stage] = results
        prefix = STAGES[stage]
        log = {f"{prefix}/{name}/{key}": value for name, r in results["attacks"].items()
               for key, value in r.items() if key in ("robust_accuracy", "MR")}
        if self.attacks:
            log[f"{prefix}/robust_acc"] = results["worst_case"]["robust_accuracy"]
        if log:
            pl_module.log_dict(log, sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_start(self, trainer, pl_module):
        if self._active(trainer, "validate"):
            self._start(trainer, pl_module, "validate")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._active(trainer, "validate"):
            self._batch(trainer, pl_module, outputs, batch, "validate")

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._active(trainer, "validate"):
            self._finish(pl_module, "validate")

    def on_test_epoch_start(self, trainer, pl_module):
        if self._active(trainer, "test"):
            self._start(trainer, pl_module, "test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._active(trainer, "test"):
            self._batch(trainer, pl_module, outputs, batch, "test")

    def on_test_epoch_end(self, trainer, pl_module):
        if self._active(trainer, "test"):
            self._finish(pl_module, "test")
