"""Saved adversarial examples: ``<directory>/<attack>.pt`` per attack, one row per test sample."""

from pathlib import Path

import torch
import torch.distributed as dist

from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.record import BatchRecord
from robustlab.success import attack_success
from robustlab.utils import save_atomic


class SavedExamples(Evaluation):
    """Writes, at the end of the test stage, ``<directory>/<attack>.pt``: tensors ``x``, ``x_adv``, ``y``,
    ``target`` (targeted attacks), ``success`` (as MR counts it), ``clean_pred``, ``adv_pred`` and ``idx``, one row
    per sample sorted by ``idx``, gathered from every process. No report section."""

    journaled = ("rows",)

    sections = ()

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def setup(self, context: Context) -> None:
        self.active = context.stage == "test"
        self.rank_zero = context.trainer.is_global_zero
        self.rows: dict[str, list[dict]] = {name: [] for name in context.attacks}

    def update(self, record: BatchRecord) -> None:
        if not self.active:
            return
        for name, result in record.attacks.items():
            adv = result.logits.argmax(1)
            rows = {
                "x": record.x,
                "x_adv": result.x_adv,
                "y": record.y,
                "success": attack_success(record.clean_pred, adv, record.y, result.target),
                "clean_pred": record.clean_pred,
                "adv_pred": adv,
                "idx": record.idx,
                **({"target": result.target} if result.target is not None else {}),
            }
            self.rows[name].append({k: v.detach().cpu() for k, v in rows.items()})

    def _write(self, name: str, parts: list[dict]) -> None:
        """Gather this attack's rows on rank 0, sort them by sample index and write them."""
        local = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        shards = [local]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shards = [None] * dist.get_world_size() if self.rank_zero else None
            dist.gather_object(local, shards, dst=0)
        if not self.rank_zero:
            return
        shards = [s for s in shards if s]
        if not shards:
            return
        rows = {k: torch.cat([s[k] for s in shards]) for k in shards[0]}
        order = rows["idx"].argsort()
        save_atomic({k: v[order] for k, v in rows.items()}, self.directory / f"{name}.pt")

    def results(self) -> None:
        if self.active:
            for name, parts in self.rows.items():
                self._write(name, parts)
        self.rows = {}
        return None
