"""Runs attacks on validation/test batches and keeps exact, distributed-reducible results."""
import time
from collections import Counter
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from robustlab.attacks.base import Attack
from robustlab.errors import RobustlabError
from robustlab.metrics import AAB, AAW, CA, MR, AttackMetric
from robustlab.metrics.computation_cost import CC
from robustlab.metrics.functional import attack_success, classification_accuracy, misclassification_ratio
from robustlab.utils import eval_mode, step_logits, synced_states

STAGES = {"validate": "val", "test": "test"}
#: The report key of an attack's robust accuracy, by ``Attack.kind`` (comprehensive paper, Sec. III-B-1).
ACCURACY_KEYS = {"whitebox": "AAW", "blackbox": "AAB"}


def _accuracy(states: dict[str, torch.Tensor]) -> float:
    return classification_accuracy(states["correct"], states["total"]).item()


def _plain(value):
    return {k: v.item() for k, v in value.items()} if isinstance(value, dict) else value.item()


class _AttackMetrics(nn.Module):
    def __init__(self, attack: Attack, metrics: dict[str, AttackMetric]):
        super().__init__()
        if attack.kind not in ACCURACY_KEYS:
            raise RobustlabError(f"{type(attack).__name__} has kind {attack.kind!r}",
                                 f"set its kind to one of {', '.join(ACCURACY_KEYS)}")
        self.robust = AAW() if attack.kind == "whitebox" else AAB()
        self.mr, self.cost = MR(), CC()
        self.extra = nn.ModuleDict({name: metric.clone() for name, metric in metrics.items()})


class AttackCallback(L.Callback):
    """Attack every validation and/or test batch with each attack in ``attacks``.

    Per attack it reports ``robust_accuracy`` (share of all samples classified correctly both
    clean and under the attack), the same value under ``AAW`` or ``AAB`` by the attack's ``kind``,
    ``MR`` (DEEPSEC: share of clean-correct samples the attack misclassifies, or, for a targeted
    attack, moves to its target), ``n_samples``, ``seconds`` (generation time summed over processes)
    and every attack-utility metric in ``metrics`` (a copy per attack) under its class name, or
    ``<class>_<name>`` when a class is given twice. ``worst_case`` counts a sample robust only if
    every attack failed on it.

    After each batch, ``last_batch`` holds ``x``, ``y``, ``idx``, ``clean_logits`` and, per attack,
    ``adv[name]`` and ``success[name]`` (clean-correct and fooled, as counted by MR), for later
    evaluation callbacks; those reading layer outputs register in ``output_readers`` at the start of
    the epoch to share forward passes (:func:`~robustlab.callbacks.coverage_callback.batch_outputs`). With ``save_adv`` (a directory), the test stage writes ``<save_adv>/<attack>.pt``:
    tensors ``x``, ``x_adv``, ``y``, ``target`` (targeted attacks), ``success``, ``clean_pred``, ``adv_pred``
    and ``idx``, one row per sample sorted by ``idx``, gathered from every process.

    Random starts are seeded per sample (``seed`` and the sample's index), so results are the
    same for any batch size or number of processes. The model is attacked in eval mode; each
    module's own mode is restored afterwards. Needs ``Trainer(inference_mode=False)``.
    """

    def __init__(self, attacks: dict[str, Attack] | None = None, stages: tuple[str, ...] = ("validate", "test"),
                 seed: int = 0, progress: bool = True, metrics: dict[str, AttackMetric] | None = None,
                 save_adv: str | Path | None = None):
        super().__init__()
        self.attacks = dict(attacks or {})
        self.stages, self.seed, self.progress = tuple(stages), int(seed), progress
        self.attack_metrics = dict(metrics or {})
        classes = Counter(type(m).__name__ for m in self.attack_metrics.values())
        self.metric_keys = {name: type(m).__name__ if classes[type(m).__name__] == 1 else f"{type(m).__name__}_{name}"
                            for name, m in self.attack_metrics.items()}
        self.save_adv = Path(save_adv) if save_adv else None
        self.metrics: dict[str, nn.ModuleDict] = {}
        self.results: dict[str, dict] = {}
        self.last_batch: dict | None = None
        self.output_readers = 0
        self._saved: dict[str, list[dict]] = {}
        self._bars: list = []

    def _active(self, trainer: L.Trainer, stage: str) -> bool:
        return stage in self.stages and not trainer.sanity_checking

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        metrics = nn.ModuleDict({"clean": CA(), "worst_case": CA(),
                                 **{name: _AttackMetrics(attack, self.attack_metrics)
                                    for name, attack in self.attacks.items()}})
        self.metrics[stage] = metrics.to(pl_module.device)
        self._saved = {name: [] for name in self.attacks}
        self.output_readers = 0
        if stage == "test" and self.progress and trainer.is_global_zero:
            total = sum(trainer.num_test_batches)
            self._bars = [tqdm(total=total, desc=f"attack {name}", position=i, leave=True, dynamic_ncols=True)
                          for i, name in enumerate(self.attacks)]

    def _batch(self, trainer, pl_module, outputs, batch, stage: str) -> None:
        x, y, idx = batch[0], batch[1], batch[2]
        metrics = self.metrics[stage]
        seeds = idx.long() + (self.seed << 32)
        last = {"x": x, "y": y, "idx": idx, "adv": {}, "success": {}}
        with eval_mode(pl_module):
            clean_logits = step_logits(pl_module, outputs, x)
            clean = clean_logits.argmax(1)
            metrics["clean"].update(clean, y)
            robust = clean == y
            for bar, (name, attack) in zip(self._bars or [None] * len(self.attacks), self.attacks.items()):
                start = time.perf_counter()
                x_adv = attack(pl_module, x, y, seeds=seeds)
                seconds = time.perf_counter() - start
                target = attack.last_target if attack.targeted else None
                with torch.no_grad():
                    adv_logits = pl_module(x_adv)
                adv = adv_logits.argmax(1)
                m = metrics[name]
                for metric in (m.robust, *m.extra.values()):
                    metric.update(pl_module, x, x_adv, y, clean_logits, adv_logits, target)
                m.mr.update(clean, adv, y, target=target)
                m.cost.update(seconds, len(y))
                robust &= adv == y
                success = attack_success(clean_logits, adv_logits, y, target)
                last["adv"][name], last["success"][name] = x_adv, success
                if self.save_adv is not None and stage == "test":
                    rows = {"x": x, "x_adv": x_adv, "y": y, "success": success, "clean_pred": clean, "adv_pred": adv,
                            "idx": idx, **({"target": target} if target is not None else {})}
                    self._saved[name].append({k: v.detach().cpu() for k, v in rows.items()})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(robust_acc=f"{m.robust.correct.item() / max(m.robust.total.item(), 1):.3f}")
        metrics["worst_case"].update(torch.where(robust, y, -1), y)
        self.last_batch = {**last, "clean_logits": clean_logits}

    def _write_adv(self, trainer: L.Trainer, name: str) -> None:
        """Gather this attack's saved rows on rank 0, sort them by sample index and write them."""
        parts = self._saved.pop(name)
        local = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        shards = [local]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shards = [None] * dist.get_world_size() if trainer.is_global_zero else None
            dist.gather_object(local, shards, dst=0)
        if not trainer.is_global_zero:
            return
        shards = [s for s in shards if s]
        if not shards:
            return
        rows = {k: torch.cat([s[k] for s in shards]) for k in shards[0]}
        order = rows["idx"].argsort()
        self.save_adv.mkdir(parents=True, exist_ok=True)
        torch.save({k: v[order] for k, v in rows.items()}, self.save_adv / f"{name}.pt")

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for bar in self._bars:
            bar.close()
        self._bars = []
        metrics = self.metrics.pop(stage)
        clean = synced_states(metrics["clean"])
        results = {"clean": {"CA": _accuracy(clean), "n_samples": int(clean["total"])}, "attacks": {}}
        for name, attack in self.attacks.items():
            m = metrics[name]
            robust, mr, cost = (synced_states(metric) for metric in (m.robust, m.mr, m.cost))
            accuracy = _accuracy(robust)
            results["attacks"][name] = {
                "robust_accuracy": accuracy, ACCURACY_KEYS[attack.kind]: accuracy,
                "MR": misclassification_ratio(mr["fooled"], mr["clean_correct"]).item(),
                "n_samples": int(robust["total"]), "seconds": float(cost["seconds"]),
                **{self.metric_keys[key]: _plain(metric.compute()) for key, metric in m.extra.items()}}
            if self.save_adv is not None and stage == "test":
                self._write_adv(trainer, name)
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
            self._finish(trainer, pl_module, "validate")

    def on_test_epoch_start(self, trainer, pl_module):
        if self._active(trainer, "test"):
            self._start(trainer, pl_module, "test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._active(trainer, "test"):
            self._batch(trainer, pl_module, outputs, batch, "test")

    def on_test_epoch_end(self, trainer, pl_module):
        if self._active(trainer, "test"):
            self._finish(trainer, pl_module, "test")
