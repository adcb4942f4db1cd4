"""Jacobian-based saliency map attack (Papernot et al. 2016), batched, targeted."""

import math

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.base import Attack
from robustlab.errors import RobustlabError
from robustlab.success import goal_met


def _best_pairs(a: torch.Tensor, b: torch.Tensor, domain: torch.Tensor, budget: int):
    """Per example, the admissible feature pair ``(p, q)``, ``p != q``, both in ``domain``, with
    ``alpha = a_p + a_q > 0`` and ``beta = b_p + b_q < 0`` that maximises ``-alpha * beta``;
    and whether one exists. Pairs are scored in chunks of at most ``budget`` entries."""
    n = a.shape[1]
    step = max(1, budget // (n * n))
    # Outside the domain a feature's a drops below -2 max|a|, so every pair holding it has alpha < 0.
    a = torch.where(domain, a, -2 * a.abs().amax(1, keepdim=True) - 1)
    p, q, ok = [], [], []
    for s in range(0, len(a), step):
        aa, bb = a[s : s + step], b[s : s + step]
        score = (aa[:, :, None] + aa[:, None, :]).clamp_(min=0)
        score.mul_((bb[:, :, None] + bb[:, None, :]).neg_().clamp_(min=0))
        score.diagonal(dim1=1, dim2=2).zero_()
        best, idx = score.flatten(1).max(1)
        p.append(idx // n), q.append(idx % n), ok.append(best > 0)
    return torch.cat(p), torch.cat(q), torch.cat(ok)


class JSMA(Attack):
    """Jacobian saliency map attack (Papernot et al., EuroS&P 2016, Alg. 3 with the pair saliency
    map of Eq. 10), on the logits as in cleverhans and DEEPSEC.

    Per example and iteration: ``a = grad Z_t`` (target logit) and ``b = grad sum_{j!=t} Z_j``;
    among pairs of features still in the search domain, take the pair maximising
    ``-(a_p + a_q)(b_p + b_q)`` subject to ``a_p + a_q > 0`` and ``b_p + b_q < 0`` (signs of the
    gradients flipped when ``theta < 0``), add ``theta`` to both, clip to [0,1] and remove them
    from the domain. The domain starts as the features not yet saturated: ``x < 0.99`` for
    ``theta > 0``, ``x > 0.01`` otherwise, as in DEEPSEC (a nearly saturated pixel would spend an
    iteration for almost no change). An example stops once classified as its target, after
    ``floor(gamma * n_features / 2)`` iterations (so at most a ``gamma`` share of features
    changes), or when no admissible pair is left. DEEPSEC: theta 1.0, gamma 0.1, targeted at a
    random wrong class. Failures return the clean image.

    ``last_iterations``: per example, the number of feature pairs modified.
    ``budget`` caps the pair-score entries held at once (memory: two float entries each).
    """

    name = "jsma"
    targeted = True
    clean_on_failure = True

    def __init__(self, theta: float = 1.0, gamma: float = 0.1, budget: int = 2**24):
        super().__init__()
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < abs(theta) <= 1:
            raise RobustlabError(
                f"theta must be a number with 0 < |theta| <= 1, got {theta!r}",
                "use theta 1.0 (DEEPSEC) to saturate features, or a negative value to darken them",
            )
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise RobustlabError(f"gamma must lie in (0, 1], got {gamma!r}", "use e.g. 0.1 (DEEPSEC)")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise RobustlabError(f"budget must be a positive integer, got {budget!r}", "leave the default 2**24")
        self.theta, self.gamma, self.budget = float(theta), float(gamma), budget

    @staticmethod
    def _gradients(model: nn.Module, x_flat: torch.Tensor, shape, target: torch.Tensor):
        """Logits, ``grad Z_t`` and ``grad sum_{j!=t} Z_j`` at ``x_flat`` (both ``(n, d)``)."""
        x_in = x_flat.view(-1, *shape).detach().requires_grad_(True)
        logits = model(x_in)
        own = torch.nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype)
        (grads,) = torch.autograd.grad(logits, x_in, grad_outputs=torch.stack([own, 1 - own]), is_grads_batched=True)
        grads = grads.flatten(2)
        return logits.detach(), grads[0], grads[1]

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        shape, n_features = x.shape[1:], x[0].numel()
        max_iters = math.floor(n_features * self.gamma / 2)
        sign = 1.0 if self.theta > 0 else -1.0
        x_adv = x.detach().flatten(1).clone()
        domain = x_adv < 0.99 if self.theta > 0 else x_adv > 0.01
        iters = torch.zeros(len(x), dtype=torch.long, device=x.device)
        active = torch.arange(len(x), device=x.device)
        for t in range(max_iters + 1):
            progress.step(t, max_iters)
            logits, a, b = self._gradients(model, x_adv[active], shape, target[active])
            self.keep_logits(active, logits)
            keep = ~goal_met(logits.argmax(1), y[active], target[active]) & (domain[active].sum(1) >= 2)
            if t == max_iters or not keep.any():
                break
            active, a, b = active[keep], a[keep], b[keep]
            p, q, ok = _best_pairs(sign * a, sign * b, domain[active], self.budget)
            active, p, q = active[ok], p[ok], q[ok]
            if len(active) == 0:
                break
            for f in (p, q):
                x_adv[active, f] = (x_adv[active, f] + self.theta).clamp(0, 1)
                domain[active, f] = False
            iters[active] += 1
        self.last_iterations = iters
        return x_adv.view_as(x)
