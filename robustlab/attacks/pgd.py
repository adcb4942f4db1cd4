"""Iterative gradient attacks: PGD (Linf, L2, sparse L1), BIM, ILLC and MI-FGSM."""

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.base import (
    Attack,
    check_count,
    check_eps,
    check_norm,
    input_gradient,
    lp_norm,
    per_example,
    random_like,
)
from robustlab.errors import RobustlabError
from robustlab.success import goal_met


def project_l1_ball(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each example of ``delta`` onto the L1 ball of radius ``eps``
    (Duchi et al. 2008, sort-based); examples already inside are left unchanged."""
    flat = delta.flatten(1)
    abs_flat = flat.abs()
    outside = abs_flat.sum(1) > eps
    if not outside.any():
        return delta
    mu = abs_flat.sort(1, descending=True).values
    cums = mu.cumsum(1) - eps
    ranks = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=delta.dtype)
    rho = ((mu - cums / ranks) > 0).sum(1).clamp_min(1)
    theta = cums.gather(1, (rho - 1)[:, None]) / rho[:, None].to(delta.dtype)
    shrunk = flat.sign() * (abs_flat - theta).clamp_min(0)
    return torch.where(outside[:, None], shrunk, flat).view_as(delta)


class PGD(Attack):
    """Projected gradient ascent (Madry et al. 2018): ``steps`` steps of size ``step`` on the
    cross-entropy, projected onto the ``norm`` ball of radius ``eps`` around ``x`` and onto [0,1].

    * ``norm="linf"``: sign steps; ``"l2"``: steps along the L2-normalised gradient;
      ``"l1"``: Sparse L1 Descent (SLIDE, Tramer & Boneh 2019): gradient entries that would leave
      [0,1] are dropped, the sign of the entries at or above the ``quantile`` of ``|grad|`` is
      kept and L1-normalised, then the iterate is projected onto the L1 ball (Duchi et al. 2008).
    * ``random_start``: a uniform point of the Linf ball; or of the L2 / L1 ball (Gaussian /
      Laplace direction, radius ``eps * u**(1/d)``), clipped to [0,1].
    * ``keep_successful`` (default): per example, return the last iterate seen to meet the goal if
      the final one does not, so a lucky final step never hides a found adversarial example (the
      final iterate is only evaluated for examples with no success yet, saving a forward pass).
      ``False`` returns the plain last iterate (Madry's training attack).
    * ``early_stop`` (with ``keep_successful``): each example leaves the batch at its first successful iterate,
      which is returned, so that broken examples cost no more steps. The success mask and ``last_iterations`` are
      those of the full run (each example's iterates are the same up to its first success); the returned images
      of broken examples differ. ``None``: decided by the evaluation loop (on unless an evaluation reads the
      returned images, or the model is randomised); off when the attack runs on its own.

    ``last_iterations`` holds, per example, the first step at which the goal was met
    (0 = already at the start point) or ``steps + 1`` if never.
    """

    name = "pgd"
    records_first_success = True
    #: A targeted run's goal: reach the ``"target"`` class, or only leave the true class (``"misclassified"``,
    #: EBD-2's rule in the comprehensive paper) while still descending towards the target.
    goal = "target"

    def __init__(
        self,
        eps: float = 0.3,
        step: float = 0.01,
        steps: int = 40,
        norm: str = "linf",
        random_start: bool = True,
        keep_successful: bool = True,
        quantile: float = 0.99,
        early_stop: bool | None = False,
    ):
        super().__init__()
        self.eps, self.step = check_eps(eps), check_eps(step, "step")
        self.steps, self.norm = check_count(steps, "steps", 0), check_norm(norm)
        self.random_start, self.keep_successful = random_start, keep_successful
        if not 0 <= quantile <= 1:
            raise RobustlabError(f"quantile must lie in [0,1], got {quantile!r}", "use e.g. 0.99 (Tramer & Boneh)")
        self.quantile = float(quantile)
        self.early_stop = None if early_stop is None else bool(early_stop)

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        elif self.norm == "l2":
            delta = delta * per_example((self.eps / lp_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0), x)
        else:
            delta = project_l1_ball(delta, self.eps)
        return (x + delta).clamp(0, 1)

    def _start(self, x: torch.Tensor, seeds) -> torch.Tensor:
        if not self.random_start or self.eps == 0:
            return x.clone()
        if self.norm == "linf":
            return (x + (2 * random_like(x, seeds) - 1) * self.eps).clamp(0, 1)
        direction = random_like(x, seeds, "normal" if self.norm == "l2" else "laplace")
        direction = direction / per_example(lp_norm(direction, self.norm).clamp_min(1e-12), x)
        radius = self.eps * random_like(x[:, :1, :1, :1].flatten(1), seeds).view(-1) ** (1.0 / x[0].numel())
        return self._project(x + direction * per_example(radius, x), x)

    def _direction(self, grad: torch.Tensor, x_adv: torch.Tensor, t: int) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        if self.norm == "l2":
            return grad / per_example(lp_norm(grad, "l2").clamp_min(1e-12), grad)
        movable = ((x_adv > 0) | (grad > 0)) & ((x_adv < 1) | (grad < 0))
        grad = grad * movable
        magnitude = grad.abs().flatten(1)
        threshold = torch.quantile(magnitude, self.quantile, dim=1, keepdim=True)
        sparse = torch.where((magnitude >= threshold) & (magnitude > 0), grad.flatten(1).sign(), 0.0)
        return (sparse / sparse.abs().sum(1, keepdim=True).clamp_min(1)).view_as(grad)

    def _compact(self, keep: torch.Tensor) -> None:
        """Drop the per-example state of the examples that left the batch (``early_stop``); none here."""

    def _perturb_early(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds, target) -> torch.Tensor:
        """``early_stop``: the examples still unbroken (``rows``) are stepped; each leaves at its first success."""
        current = self._start(x, seeds)
        out = current.clone()
        first = torch.full((len(x),), self.steps + 1, device=x.device)
        rows = torch.arange(len(x), device=x.device)
        for t in range(self.steps + 1):
            aim = None if target is None else target[rows]
            if t < self.steps:
                progress.step(t, self.steps)
                grad, logits = input_gradient(model, current, y[rows], aim)
            else:
                with torch.no_grad():
                    logits = model(current)
            met = goal_met(logits.argmax(1), y[rows], aim if self.goal == "target" else None)
            leaving = met if t < self.steps else torch.ones_like(met)
            out[rows[leaving]] = current[leaving]
            self.keep_logits(rows[leaving], logits, among=leaving)
            first[rows[met]] = t
            if t == self.steps or met.all():
                break
            current = self._project(current + self.step * self._direction(grad, current, t), x[rows])
            rows, current = rows[~met], current[~met]
            self._compact(~met)
        self.last_iterations = first
        self.last_success = first <= self.steps
        return out

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.early_stop and self.keep_successful:
            return self._perturb_early(model, x, y, seeds, target)
        x_adv = self._start(x, seeds)
        best, best_logits = x_adv, None
        first = torch.full((len(x),), self.steps + 1, device=x.device)
        kept = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for t in range(self.steps):
            progress.step(t, self.steps)
            grad, logits = input_gradient(model, x_adv, y, target)
            met = goal_met(logits.argmax(1), y, target if self.goal == "target" else None)
            if self.keep_successful:
                best = torch.where(per_example(met, x), x_adv, best)
                best_logits = logits if best_logits is None else torch.where(met[:, None], logits, best_logits)
                if t == self.steps - 1:  # these rows return this pass's images: kept with the pass itself
                    kept = met
                    self.keep_logits(met, logits, among=met)
            first = torch.where(met & (first > t), t, first)
            x_adv = self._project(x_adv + self.step * self._direction(grad, x_adv, t), x)
        # The final iterate needs a forward pass only where its outcome decides something: every
        # example without keep_successful, else only those not yet successful.
        todo = first > self.steps if self.keep_successful else torch.ones_like(first, dtype=torch.bool)
        met = torch.zeros_like(todo)
        if todo.any():
            with torch.no_grad():
                logits = model(x_adv[todo])
            met[todo] = goal_met(
                logits.argmax(1), y[todo], None if target is None or self.goal != "target" else target[todo]
            )
            self.keep_logits(todo, logits)
        first = torch.where(met & (first > self.steps), self.steps, first)
        self.last_iterations = first
        if not self.keep_successful:
            self.last_success = met
            return x_adv
        self.last_success = first <= self.steps
        use_best = self.last_success & ~met
        earlier = use_best & ~kept
        if earlier.any():
            self.keep_logits(earlier, best_logits[earlier])
        return torch.where(per_example(use_best, x), best, x_adv)


class BIM(PGD):
    """Basic Iterative Method (Kurakin et al. 2017): PGD-Linf from the clean image.
    DEEPSEC defaults: eps 0.3 / 0.1, step 0.05 / 0.01, 15 steps (MNIST / CIFAR-10)."""

    name = "bim"

    def __init__(
        self,
        eps: float = 0.3,
        step: float = 0.05,
        steps: int = 15,
        keep_successful: bool = True,
        early_stop: bool | None = False,
    ):
        super().__init__(eps, step, steps, "linf", False, keep_successful, early_stop=early_stop)


class ILLC(PGD):
    """Iterative least-likely class (Kurakin et al. 2017): BIM descending the cross-entropy of the
    clean image's least-likely class (or ``target=``). DEEPSEC: eps 0.3 / 0.1, step 0.05 / 0.01, 10 steps."""

    name = "illc"
    targeted = True
    target_rule = "least_likely"

    def __init__(
        self,
        eps: float = 0.3,
        step: float = 0.05,
        steps: int = 10,
        keep_successful: bool = True,
        early_stop: bool | None = False,
    ):
        super().__init__(eps, step, steps, "linf", False, keep_successful, early_stop=early_stop)


class LLC(ILLC):
    """Least-likely class (Kurakin et al. 2017): one signed step of size ``eps`` towards the
    clean image's least-likely class (or ``target=``). DEEPSEC: eps 0.3 / 0.1."""

    name = "llc"

    def __init__(self, eps: float = 0.3):
        super().__init__(eps, eps, 1, keep_successful=False)


class MIFGSM(PGD):
    """Momentum iterative FGSM (Dong et al. 2018): ``g <- decay * g + grad / ||grad||_1`` and
    ``x <- clip(x + step * sign(g))`` in the Linf ball. ``targeted=True`` is T-MI-FGSM, aimed at a
    uniformly random wrong class (or ``target=``). DEEPSEC: as BIM (eps 0.3 / 0.1, step
    0.05 / 0.01, 15 steps), decay 1.0."""

    name = "mifgsm"

    def __init__(
        self,
        eps: float = 0.3,
        step: float = 0.05,
        steps: int = 15,
        decay: float = 1.0,
        targeted: bool = False,
        keep_successful: bool = True,
        early_stop: bool | None = False,
    ):
        super().__init__(eps, step, steps, "linf", False, keep_successful, early_stop=early_stop)
        self.decay, self.targeted = check_eps(decay, "decay"), bool(targeted)
        self._momentum: torch.Tensor | None = None

    def _direction(self, grad: torch.Tensor, x_adv: torch.Tensor, t: int) -> torch.Tensor:
        grad = grad / per_example(lp_norm(grad, "l1").clamp_min(1e-12), grad)
        self._momentum = grad if t == 0 else self.decay * self._momentum + grad
        return self._momentum.sign()

    def _compact(self, keep: torch.Tensor) -> None:
        self._momentum = self._momentum[keep]

    def perturb(self, model, x, y, seeds=None, target=None):
        try:
            return super().perturb(model, x, y, seeds, target)
        finally:
            self._momentum = None
