"""A few adversarial examples per attack, kept for the report's gallery (:mod:`robustlab.report`)."""

from pathlib import Path

import torch

from robustlab.evaluation.base import Context, Evaluation
from robustlab.evaluation.record import BatchRecord
from robustlab.success import attack_success
from robustlab.utils import save_atomic


def successes_first(success: torch.Tensor, size: int) -> torch.Tensor:
    """The indices of the first ``size`` successful examples, then of the first ``size`` others."""
    return torch.cat([success.nonzero()[:size, 0], (~success).nonzero()[:size, 0]])


class Gallery(Evaluation):
    """Writes ``path`` at the end of the test stage: ``{attack: {field: tensor}}`` (``idx``, ``x``, ``x_adv``, ``y``,
    ``clean_pred``, ``adv_pred``, their softmax confidences ``clean_conf`` and ``adv_conf``, ``success`` and, for a
    targeted attack, ``target``) for the first ``size`` examples the attack succeeded on (as MR counts success),
    then, if fewer succeeded, the first others. Only the first process keeps examples (a few rows of its first
    batches), so this costs next to nothing; no report section. ``save_adv=true`` keeps every example instead
    (:class:`SavedExamples`)."""

    journaled = ("kept",)
    needs_final_iterates = False
    sections = ()

    def __init__(self, path: str | Path, size: int = 4):
        self.path, self.size = Path(path), int(size)

    def setup(self, context: Context) -> None:
        self.active = context.stage == "test" and context.trainer.is_global_zero and self.size > 0
        self.kept: dict[str, dict[str, torch.Tensor]] = {}

    def update(self, record: BatchRecord) -> None:
        if not self.active:
            return
        clean = record.clean_logits.detach().softmax(1).max(1)
        for name, result in record.attacks.items():
            adv = result.logits.detach().softmax(1).max(1)
            rows = {
                "idx": record.idx,
                "x": record.x,
                "x_adv": result.x_adv,
                "y": record.y,
                "clean_pred": clean.indices,
                "adv_pred": adv.indices,
                "clean_conf": clean.values,
                "adv_conf": adv.values,
                "success": attack_success(record.clean_pred, adv.indices, record.y, result.target),
                **({"target": result.target} if result.target is not None else {}),
            }
            old = self.kept.get(name)
            rows = {k: (torch.cat([old[k], v.detach().cpu()]) if old else v.detach().cpu()) for k, v in rows.items()}
            keep = successes_first(rows["success"], self.size).sort().values
            self.kept[name] = {k: v[keep] for k, v in rows.items()}

    def results(self) -> None:
        if self.active and self.kept:
            gallery = {}
            for name, rows in self.kept.items():
                order = successes_first(rows["success"], self.size)[: self.size]
                gallery[name] = {k: v[order] for k, v in rows.items()}
            save_atomic(gallery, self.path)
        self.kept = {}
        return None
