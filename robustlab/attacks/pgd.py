"""Projected Gradient Descent (Madry et al. 2018) in Linf and L2."""
import torch
from torch import nn

from robustlab.attacks.base import Attack, check_eps, check_norm, input_gradient, lp_norm, random_like


class PGD(Attack):
    """``steps`` gradient steps of size ``step`` on the cross-entropy, projected onto the
    ``norm`` ball of radius ``eps`` around ``x`` and onto [0,1].

    * ``random_start``: start from a uniform point of the Linf ball, or a uniform point of the
      L2 ball (Gaussian direction, radius ``eps * u**(1/d)``).
    * ``keep_successful`` (default): per example, return the last iterate that was misclassified
      if the final one is not, so a lucky final step never hides a found adversarial example.
      ``False`` returns the plain last iterate (Madry's training attack).

    ``last_iterations`` holds, per example, the first step at which it was misclassified
    (0 = already at the start point) or ``steps + 1`` if never.
    """

    name = "pgd"

    def __init__(self, eps: float = 0.3, step: float = 0.01, steps: int = 40, norm: str = "linf",
                 random_start: bool = True, keep_successful: bool = True):
        super().__init__()
        self.eps, self.step = check_eps(eps), check_eps(step, "step")
        self.steps, self.norm = int(steps), check_norm(norm)
        self.random_start, self.keep_successful = random_start, keep_successful
        self.last_iterations: torch.Tensor | None = None

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            scale = (self.eps / lp_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
            delta = delta * scale.view(-1, *([1] * (x.dim() - 1)))
        return (x + delta).clamp(0, 1)

    def _start(self, x: torch.Tensor, seeds) -> torch.Tensor:
        if not self.random_start or self.eps == 0:
            return x.clone()
        if self.norm == "linf":
            return (x + (2 * random_like(x, seeds) - 1) * self.eps).clamp(0, 1)
        direction = random_like(x, seeds, "normal")
        direction = direction / lp_norm(direction, "l2").clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        dim = x[0].numel()
        radius = self.eps * random_like(x[:, :1, :1, :1].flatten(1), seeds).view(-1) ** (1.0 / dim)
        return self._project(x + direction * radius.view(-1, *([1] * (x.dim() - 1))), x)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None) -> torch.Tensor:
        shape = (-1, *([1] * (x.dim() - 1)))
        x_adv = self._start(x, seeds)
        best = x_adv.clone()
        first = torch.full((len(x),), self.steps + 1, device=x.device)
        for t in range(self.steps + 1):
            if t < self.steps:
                grad, logits = input_gradient(model, x_adv, y)
            else:
                with torch.no_grad():
                    logits = model(x_adv)
            wrong = logits.argmax(1) != y
            best[wrong] = x_adv[wrong]
            first[wrong & (first > t)] = t
            if t < self.steps:
                direction = grad.sign() if self.norm == "linf" else grad / lp_norm(grad, "l2").clamp_min(1e-12).view(shape)
                x_adv = self._project(x_adv + self.step * direction, x)
        self.last_iterations = first
        if not self.keep_successful:
            self.last_success = wrong
            return x_adv
        self.last_success = first <= self.steps
        return torch.where(self.last_success.view(shape), best, x_adv)
