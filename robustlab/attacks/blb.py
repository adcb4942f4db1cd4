"""Box-constrained L-BFGS (Szegedy et al. 2014), with scipy's L-BFGS-B per example."""

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize
from threadpoolctl import threadpool_limits
from torch import nn

from robustlab import progress
from robustlab.attacks.base import check_count, check_eps
from robustlab.attacks.optimization import _BinarySearchAttack
from robustlab.success import goal_met


class BLB(_BinarySearchAttack):
    """Box-constrained L-BFGS attack (Szegedy et al., ICLR 2014), targeted: minimise
    ``||x' - x||_2^2 + c * CE(f(x'), t)`` over the box ``x' in [0,1]^n`` with L-BFGS-B (its
    bounds are the box), starting from ``x``, in cleverhans' and DEEPSEC's form (``c`` on the
    loss, the smallest successful ``c`` sought). Every objective evaluation that the model
    classifies as ``t`` is a candidate; per example the candidate of least L2 is returned.

    Each example runs its own L-BFGS-B and its own binary search over ``c`` (start ``c0``, x10
    until the first success, then bisection). A joint L-BFGS over the batch would share curvature
    pairs, line searches and stopping between examples, so results would depend on the batch.

    DEEPSEC: c0 0.01, 5 binary-search steps, targeted at a random wrong class; ``steps`` (L-BFGS-B
    iterations per binary-search step) 1000 as in cleverhans. Failures return the clean image.
    ``last_iterations``: per example, the objective evaluation (counted over all binary-search
    steps) that produced the returned example; 0 where it failed.

    scipy's BLAS runs on one thread here: its idle threads spin between calls and slow the model's
    own threads (on 2 cores, 4x); the vectors are too small for threads to help, and results are the same.
    """

    name = "blb"
    targeted = True

    def __init__(self, c0: float = 0.01, binary_steps: int = 5, steps: int = 1000):
        super(_BinarySearchAttack, self).__init__()
        self.c0 = check_eps(c0, "c0")
        self.binary_steps, self.steps = check_count(binary_steps, "binary_steps"), check_count(steps, "steps")

    def _goal(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return goal_met(logits.argmax(1), label, label)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        results, logits, success, iters = [], [], [], []
        with threadpool_limits(1, user_api="blas"):
            for i in range(len(x)):
                x_i, t_i = x[i : i + 1], target[i : i + 1]
                with progress.part(i, len(x)):
                    best, found = self._search(lambda c, state: self._minimise(model, x_i, t_i, c, state), x_i)
                results.append(best)
                logits.append(found)
                success.append(self.last_success)
                iters.append(self.last_iterations)
        self.last_success, self.last_iterations = torch.cat(success), torch.cat(iters)
        self._keep_found(torch.cat(logits))
        return torch.cat(results)

    def _minimise(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, c: torch.Tensor, state) -> None:
        evals = 0

        def objective(z: np.ndarray):
            nonlocal evals
            x_k = torch.from_numpy(z).to(x).view_as(x).requires_grad_(True)
            logits = model(x_k)
            dist = (x_k - x).pow(2).flatten(1).sum(1)
            loss = (dist + c * F.cross_entropy(logits, target, reduction="none")).sum()
            (grad,) = torch.autograd.grad(loss, x_k)
            logits = logits.detach()
            self._record(state, x_k.detach(), logits, self._goal(logits, target), dist.detach(), evals)
            evals += 1
            return loss.item(), grad.flatten().double().cpu().numpy()

        start = x.detach().flatten().double().cpu().numpy()
        minimize(
            objective, start, jac=True, method="L-BFGS-B", bounds=Bounds(0.0, 1.0), options={"maxiter": self.steps}
        )
        state["offset"] += evals
