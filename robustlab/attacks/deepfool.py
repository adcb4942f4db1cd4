"""DeepFool (Moosavi-Dezfooli et al. 2016), batched, L2."""

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.base import Attack, check_count, check_eps, per_example
from robustlab.success import goal_met


class DeepFool(Attack):
    """Minimal L2 perturbation by iterated linearisation (Moosavi-Dezfooli et al. 2016, Alg. 2).

    Per example and iteration, with ``f_k = Z_k - Z_y`` and ``w_k = grad f_k`` at the current
    point, take the class ``l`` with the smallest ``|f_l| / ||w_l||_2`` and add
    ``r = (|f_l| + 1e-4) * w_l / ||w_l||_2^2`` to the accumulated ``r_tot``; the iterate is
    ``clip(x + (1 + overshoot) * r_tot, 0, 1)``. Stops per example once it is misclassified.
    ``candidates`` restricts the classes to the top-k of the clean logits (None: all).
    DEEPSEC: 50 iterations, overshoot 0.02. Failures return the clean image.

    ``last_iterations``: per example, iterations needed (0 = misclassified already),
    ``steps + 1`` where it failed.
    """

    name = "deepfool"
    clean_on_failure = True
    minimal_norm = "l2"
    records_first_success = True

    def __init__(self, steps: int = 50, overshoot: float = 0.02, candidates: int | None = None):
        super().__init__()
        self.steps, self.overshoot = check_count(steps, "steps"), check_eps(overshoot, "overshoot")
        self.candidates = None if candidates is None else check_count(candidates, "candidates", 2)

    @staticmethod
    def _class_gradients(model, x_act, classes):
        """Logits, the logits of ``classes`` (per example) and their input gradients ``(n, k, d)``."""
        x_act = x_act.detach().requires_grad_(True)
        logits = model(x_act)
        picked = logits.gather(1, classes)
        eye = torch.eye(classes.shape[1], device=x_act.device, dtype=logits.dtype)
        (grads,) = torch.autograd.grad(
            picked, x_act, grad_outputs=eye[:, None, :].expand(-1, len(x_act), -1), is_grads_batched=True
        )
        return logits.detach(), picked.detach(), grads.transpose(0, 1).flatten(2)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        logits = self.predict_clean(model, x)
        k = logits.shape[1] if self.candidates is None else min(self.candidates, logits.shape[1])
        rest = logits.scatter(1, y[:, None], float("-inf")).topk(k - 1, 1).indices
        classes = torch.cat([y[:, None], rest], 1)
        x_adv, r_tot = x.clone(), torch.zeros_like(x)
        iters = torch.full((len(x),), self.steps + 1, device=x.device)
        active = torch.arange(len(x), device=x.device)
        for t in range(self.steps + 1):
            progress.step(t, self.steps)
            if t == self.steps:
                with torch.no_grad():
                    logits = model(x_adv[active])
                fooled = goal_met(logits.argmax(1), y[active])
                iters[active[fooled]] = t
                self.keep_logits(active[fooled], logits[fooled])
                break
            y_act, cls = y[active], classes[active]
            logits, picked, grads = self._class_gradients(model, x_adv[active], cls)
            fooled = goal_met(logits.argmax(1), y_act)
            iters[active[fooled]] = t
            self.keep_logits(active[fooled], logits[fooled])
            keep = ~fooled
            active, picked, grads = active[keep], picked[keep], grads[keep]
            if len(active) == 0:
                break
            f = picked - picked[:, :1]
            w = grads - grads[:, :1]
            w_norm = w.norm(dim=2)
            dist = f.abs() / (w_norm + 1e-8)
            dist[:, 0] = float("inf")
            best = dist.argmin(1)
            rows = torch.arange(len(active), device=x.device)
            w_l, f_l = w[rows, best], f[rows, best].abs()
            r = ((f_l + 1e-4) / w_norm[rows, best].pow(2).clamp_min(1e-12))[:, None] * w_l
            r_tot[active] += r.view_as(x[active])
            x_adv[active] = (x[active] + (1 + self.overshoot) * r_tot[active]).clamp(0, 1)
        self.last_iterations = iters
        self.last_success = iters <= self.steps
        return torch.where(per_example(self.last_success, x), x_adv, x)
