"""AutoAttack (Croce & Hein, ICML 2020): an ensemble of parameter-free attacks, per-example worst case."""

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.apgd import APGD, APGDT, salted
from robustlab.attacks.base import Attack, check_eps, check_norm, variant
from robustlab.attacks.fab import FABT
from robustlab.attacks.square import Square
from robustlab.errors import RobustlabError
from robustlab.success import goal_met

VERSIONS = ("standard", "rand", "custom")


class AutoAttack(Attack):
    """Runs its stages in order; each stage attacks, from the clean image, only the examples that
    every earlier stage left correctly classified, and an example counts as broken (and gets that
    stage's image) as soon as one stage misclassifies it: the per-example worst case.

    * ``version="standard"``: APGD-CE -> APGD-T (9 targets) -> FAB-T (9 targets) -> Square (5000
      queries), 100 iterations each, as Croce & Hein. For ``norm="l1"``: APGD-CE (5 restarts) ->
      APGD-T (5 targets), both with the 3-2-1 x eps schedule; FAB-T and Square have no L1 version here.
    * ``version="rand"`` (randomised defenses): APGD-CE -> APGD-DLR, each with EOT over 20 passes.
    * ``version="custom"``: the given ``attacks`` (any robustlab attacks; success is misclassification).

    ``last_stage`` holds, per example, the index into ``stage_names`` of the stage that broke it
    ("clean" if it was misclassified clean), or -1 if it stayed robust. ``last_iterations`` sums the
    stages' iteration counts (Square's are search iterations) over the stages that ran on it.
    """

    name = "autoattack"

    def __init__(
        self, eps: float = 0.3, norm: str = "linf", version: str = "standard", attacks: list[Attack] | None = None
    ):
        super().__init__()
        self.eps, self.norm = check_eps(eps), check_norm(norm)
        if version not in VERSIONS:
            raise RobustlabError(f"unknown AutoAttack version {version!r}", f"use one of {', '.join(VERSIONS)}")
        if (version == "custom") != bool(attacks):
            raise RobustlabError(
                f"AutoAttack version {version!r} with{'' if attacks else 'out'} attacks=",
                "pass attacks=[...] with version='custom' only",
            )
        self.version = version
        if version == "custom":
            if not all(isinstance(a, Attack) for a in attacks):
                raise RobustlabError("AutoAttack attacks= must be robustlab attacks", "pass Attack instances")
            self.attacks = list(attacks)
        elif version == "rand":
            self.attacks = [APGD(eps, norm, "ce", eot_iter=20), APGD(eps, norm, "dlr", eot_iter=20)]
        elif norm == "l1":
            self.attacks = [
                APGD(eps, norm, "ce", restarts=5, large_reps=True),
                APGDT(eps, norm, n_targets=5, large_reps=True),
            ]
        else:
            self.attacks = [
                APGD(eps, norm, "ce"),
                APGDT(eps, norm),
                FABT(eps, norm),
                Square(eps, norm, rescale_schedule=False),
            ]
        self.stage_names = ["clean"] + [a.label for a in self.attacks]
        self.last_stage: torch.Tensor | None = None

    def reset(self, stage: str) -> None:
        for attack in self.attacks:
            attack.reset(stage)

    def scale_budget(self, fraction: float) -> None:
        """Scale its eps and every stage's budget (the stages are copied first, so a copy of this attack scales
        without touching the original's)."""
        super().scale_budget(fraction)
        self.attacks = [variant(attack) for attack in self.attacks]
        for attack in self.attacks:
            attack.scale_budget(fraction)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        logits = self.predict_clean(model, x)
        stage = torch.where(goal_met(logits.argmax(1), y), 0, -1)
        iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
        x_adv, logits = x.clone(), logits.clone()
        for j, attack in enumerate(self.attacks, start=1):
            idx = (stage < 0).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            with progress.part(j - 1, len(self.attacks)):
                out = attack.run(
                    model,
                    x[idx],
                    y[idx],
                    seeds=salted(None if seeds is None else seeds[idx], 7 * j),
                    clean_logits=logits[idx],
                )
            broken = goal_met(out.logits.argmax(1), y[idx])
            x_adv[idx[broken]], logits[idx[broken]], stage[idx[broken]] = out.x_adv[broken], out.logits[broken], j
            if out.iterations is not None:
                iterations[idx] += out.iterations.to(iterations)
        self.last_stage, self.last_iterations = stage, iterations
        self.last_success = stage >= 0
        self.keep_logits(torch.arange(len(x), device=x.device), logits)
        return x_adv
