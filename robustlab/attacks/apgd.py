"""Auto-PGD (Croce & Hein, ICML 2020) with the CE and DLR losses, and its targeted DLR variant APGD-T."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustlab import progress
from robustlab.attacks.base import Attack, check_count, check_eps, check_norm, lp_norm, per_example, random_like
from robustlab.errors import RobustlabError
from robustlab.success import goal_met

LOSSES = ("ce", "dlr")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020, Eq. 6), per example:
    ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi`` the sorted logits."""
    z = logits.sort(1, descending=True).values
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return -(own - other) / (z[:, 0] - z[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, Eq. 7): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``."""
    z = logits.sort(1, descending=True).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -gap / (z[:, 0] - (z[:, 2] + z[:, 3]) / 2 + 1e-12)


def project_l1_box(delta: torch.Tensor, x: torch.Tensor, eps: float, iterations: int = 40) -> torch.Tensor:
    """Euclidean projection of ``delta`` onto ``{d: ||d||_1 <= eps, 0 <= x + d <= 1}`` per example
    (Croce & Hein 2021, "Mind the box"): ``d_i = sign(v_i) min(max(|v_i| - theta, 0), room_i)`` with
    the threshold ``theta`` found by bisection (the upper end, so the result is always feasible)."""
    v, x0 = delta.flatten(1), x.flatten(1)
    room = torch.where(v > 0, 1 - x0, x0)
    size = v.abs()

    def shrunk(theta):
        return (size - theta[:, None]).clamp_min(0).minimum(room)

    lo, hi = torch.zeros_like(v[:, 0]), size.amax(1)
    inside = shrunk(lo).sum(1) <= eps
    for _ in range(iterations):
        mid = (lo + hi) / 2
        over = shrunk(mid).sum(1) > eps
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    return (v.sign() * shrunk(torch.where(inside, lo, hi))).view_as(delta)


def salted(seeds: torch.Tensor | None, salt: int) -> torch.Tensor | None:
    """Per-example seeds for restart / target / stage number ``salt`` (``salt`` 0 keeps them)."""
    return seeds if seeds is None or salt == 0 else seeds ^ (salt * 0x9E3779B9)


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020, Alg. 1): PGD with momentum 0.75 whose step size starts at
    ``2 * eps`` and is halved, restarting from the best point, at checkpoints ``0.22 N``, then
    spaced ``0.03 N`` closer each time (at least ``0.06 N``), wherever fewer than ``rho`` of the
    steps since the previous checkpoint raised the loss, or where the step was not halved last
    time and the best loss did not improve since.

    * ``loss``: ``"ce"`` or ``"dlr"`` (difference of logits ratio, needs 3 classes).
    * ``norm="l1"``: APGD-L1 (Croce & Hein 2021): sparse steps along the top-``k`` gradient entries
      with adaptive ``k``, initial step ``eps``, checkpoints every ``0.04 N``, exact projection onto
      the intersection of the L1 ball and the [0,1] box, no momentum. ``large_reps`` runs the
      paper's 3-2-1 x eps schedule (30/30/40 % of the steps), as AutoAttack does for L1.
    * ``restarts``: runs from new random starts on the examples not yet broken.
    * ``eot_iter``: gradients averaged over this many forward passes (randomised models).

    Examples misclassified clean are not attacked. With ``early_stop`` (default) each example stops once
    misclassified and its first misclassified iterate is returned (its trajectory does not depend on the others,
    so the success mask is that of the full run, at a fraction of the cost); ``early_stop=False`` runs every step,
    as the reference does, and returns each example's last misclassified iterate. With ``eot_iter > 1``
    "misclassified" is decided on the mean logits of the ``eot_iter`` draws.
    ``last_iterations``: per example, the iteration (counted over restarts; 0 = the start point) of
    its first misclassified iterate, or the total number of iterations if it was never broken.
    """

    name = "apgd"
    records_first_success = True

    def __init__(
        self,
        eps: float = 0.3,
        norm: str = "linf",
        loss: str = "ce",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        large_reps: bool = False,
        early_stop: bool = True,
    ):
        super().__init__()
        self.eps, self.norm = check_eps(eps), check_norm(norm)
        if loss not in LOSSES:
            raise RobustlabError(f"unknown APGD loss {loss!r}", f"use one of {', '.join(LOSSES)}")
        if not 0 < rho <= 1:
            raise RobustlabError(f"rho must lie in (0, 1], got {rho!r}", "use 0.75 (Croce & Hein)")
        if large_reps and (norm != "l1" or steps < 5):
            raise RobustlabError("large_reps needs norm='l1' and at least 5 steps", "drop large_reps or fix norm/steps")
        self.loss, self.steps, self.restarts = loss, check_count(steps, "steps"), check_count(restarts, "restarts")
        self.rho, self.eot_iter, self.large_reps = float(rho), check_count(eot_iter, "eot_iter"), bool(large_reps)
        self.early_stop = bool(early_stop)

    @property
    def label(self) -> str:
        return f"apgd-{self.loss}"

    def _objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is not None:
            return targeted_dlr_loss(logits, y, target)
        return F.cross_entropy(logits, y, reduction="none") if self.loss == "ce" else dlr_loss(logits, y)

    def _gradient(self, model, x_adv, y, target):
        """The gradient, loss and logits at ``x_adv``, each the mean over ``eot_iter`` forward passes: early
        stops and the step-size rule of a randomised model are decided on all the draws, not the last one."""
        grad, total_loss, total_logits = torch.zeros_like(x_adv), 0, 0
        for _ in range(self.eot_iter):
            xg = x_adv.detach().requires_grad_(True)
            logits = model(xg)
            loss = self._objective(logits, y, target)
            grad += torch.autograd.grad(loss.sum(), xg)[0]
            total_loss, total_logits = total_loss + loss.detach(), total_logits + logits.detach()
        return grad / self.eot_iter, total_loss / self.eot_iter, total_logits / self.eot_iter

    def _project(self, x_new: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        delta = x_new - x
        if self.norm == "linf":
            return (x + delta.clamp(-eps, eps)).clamp(0, 1)
        if self.norm == "l2":
            scale = (eps / lp_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
            return (x + delta * per_example(scale, x)).clamp(0, 1)
        return x + project_l1_box(delta, x, eps)

    def _start(self, x: torch.Tensor, seeds, eps: float) -> torch.Tensor:
        if self.norm == "linf":
            t = 2 * random_like(x, seeds) - 1
            return (x + eps * t / per_example(lp_norm(t, "linf").clamp_min(1e-12), x)).clamp(0, 1)
        t = random_like(x, seeds, "normal")
        if self.norm == "l2":
            return (x + eps * t / per_example(lp_norm(t, "l2").clamp_min(1e-12), x)).clamp(0, 1)
        return x + project_l1_box(t, x, eps)

    def _sparse_step(self, grad: torch.Tensor, topk: torch.Tensor) -> torch.Tensor:
        """APGD-L1 direction: signs of the ``topk`` share of largest |grad| entries, L1-normalised."""
        flat = grad.flatten(1)
        n = flat.shape[1]
        rank = ((1 - topk) * n).clamp(0, n - 1).long()
        threshold = flat.abs().sort(1).values.gather(1, rank[:, None])
        direction = torch.where(flat.abs() >= threshold, flat.sign(), 0.0)
        return (direction / (direction.abs().sum(1, keepdim=True) + 1e-10)).view_as(grad)

    def _run(self, model, x, y, target, x_start, steps: int, eps: float, stop: bool):
        """One APGD run from ``x_start``; ``stop``: each example leaves at its first misclassified iterate. Returns
        per example that iterate (without ``stop`` the last misclassified one) or ``x``, its logits (zero where none),
        the success mask, the iteration of first success (``steps`` if none) and the highest-loss point (the warm
        start of the next ``large_reps`` stage)."""
        n, l1 = len(x), self.norm == "l1"
        found_x, found = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        first = torch.full((n,), steps, dtype=torch.long, device=x.device)
        grad, loss, logits = self._gradient(model, x_start, y, target)
        found_logits = torch.zeros_like(logits)
        s = {
            "i": torch.arange(n, device=x.device),
            "x": x,
            "y": y,
            "x_adv": x_start,
            "x_old": x_start,
            "grad": grad,
            "x_best": x_start,
            "grad_best": grad,
            "loss_best": loss,
            "last": loss,
            "ups": torch.zeros(n, device=x.device),
            "loss_check": loss,
            "reduced": torch.ones(n, dtype=torch.bool, device=x.device),
            "step": torch.full((n,), (1.0 if l1 else 2.0) * eps, device=x.device),
        }
        if target is not None:
            s["t"] = target
        if l1:
            features = x[0].numel()
            sparsity = (x_start != x).flatten(1).sum(1).float()
            fresh = torch.equal(x_start, x) or not self.large_reps
            s["topk"] = torch.full((n,), 0.2, device=x.device) if fresh else sparsity / features / 1.5
            s["sp_old"] = torch.full((n,), float(features), device=x.device) if fresh else sparsity
            k = max(int(0.04 * steps), 1)
        else:
            k = max(int(0.22 * steps), 1)
        k_min, k_decr, counter = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1), 0
        best_x = x_start.clone()
        for it in range(steps + 1):
            progress.step(it, steps)
            met = goal_met(logits.argmax(1), s["y"])
            if met.any():
                hit = s["i"][met]
                first[hit] = torch.where(found[hit], first[hit], it)
                found_x[hit], found[hit], found_logits[hit] = s["x_adv"][met], True, logits[met]
                if stop:
                    best_x[hit] = s["x_best"][met]
                    s = {key: v[~met] for key, v in s.items()}
                    grad, loss, logits = grad[~met], loss[~met], logits[~met]
            if it == steps or len(s["i"]) == 0:
                break
            if it > 0:
                improved = loss > s["loss_best"]
                s["ups"] = s["ups"] + (loss > s["last"]).float()
                s["last"] = loss
                keep = per_example(improved, s["x"])
                s["x_best"] = torch.where(keep, s["x_adv"], s["x_best"])
                s["grad_best"] = torch.where(keep, grad, s["grad_best"])
                s["loss_best"] = torch.where(improved, loss, s["loss_best"])
                counter += 1
                if counter == k:
                    grad = self._checkpoint(s, grad, k, eps)
                    counter, k = 0, (k if l1 else max(k - k_decr, k_min))
            x_adv, xs = s["x_adv"], s["x"]
            step = per_example(s["step"], xs)
            if l1:
                x_new = self._project(x_adv + step * self._sparse_step(grad, s["topk"]), xs, eps)
            else:
                direction = (
                    grad.sign()
                    if self.norm == "linf"
                    else grad / per_example(lp_norm(grad, "l2").clamp_min(1e-12), grad)
                )
                x_new = self._project(x_adv + step * direction, xs, eps)
                if it > 0:
                    x_new = self._project(x_adv + 0.75 * (x_new - x_adv) + 0.25 * (x_adv - s["x_old"]), xs, eps)
            s["x_old"], s["x_adv"] = x_adv, x_new
            grad, loss, logits = self._gradient(model, x_new, s["y"], s.get("t"))
        if len(s["i"]):
            best_x[s["i"]] = s["x_best"]
        return found_x, found_logits, found, first, best_x

    def _checkpoint(self, s: dict, grad: torch.Tensor, k: int, eps: float) -> torch.Tensor:
        """Step-size rule at a checkpoint; updates ``s`` in place and returns the gradient to use."""
        if self.norm == "l1":
            sparsity = (s["x_best"] != s["x"]).flatten(1).sum(1).float()
            restart = sparsity / s["sp_old"] < 0.95
            s["topk"] = sparsity / s["x"][0].numel() / 1.5
            s["step"] = torch.where(restart, eps, s["step"] / 1.5).clamp(eps / 10, eps)
            s["sp_old"] = sparsity
        else:
            restart = (s["ups"] <= k * self.rho) | (~s["reduced"] & (s["loss_check"] >= s["loss_best"]))
            s["reduced"], s["loss_check"] = restart, s["loss_best"]
            s["step"] = torch.where(restart, s["step"] / 2, s["step"])
        s["ups"] = torch.zeros_like(s["ups"])
        back = per_example(restart, s["x"])
        s["x_adv"] = torch.where(back, s["x_best"], s["x_adv"])
        return torch.where(back, s["grad_best"], grad)

    def _attack(self, model, x, y, seeds, target):
        """All restarts (and ``large_reps`` stages) on ``x``; returns found points, their logits, mask, iterations."""
        n = len(x)
        out, found, out_logits = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device), None
        first = torch.full((n,), self.steps * self.restarts, dtype=torch.long, device=x.device)
        for r in range(self.restarts):
            todo = (~found).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            xs, ys, ts = x[todo], y[todo], None if target is None else target[todo]
            sd = salted(None if seeds is None else seeds[todo], r)
            with progress.part(r, self.restarts):
                if self.large_reps:
                    res = self._large_reps(model, xs, ys, ts, sd)
                else:
                    start = self._start(xs, sd, self.eps)
                    res = self._run(model, xs, ys, ts, start, self.steps, self.eps, self.early_stop)
            x_found, logits, ok, it = res[:4]
            if out_logits is None:
                out_logits = logits.new_zeros(n, logits.shape[1])
            out[todo[ok]], found[todo[ok]], first[todo[ok]] = x_found[ok], True, r * self.steps + it[ok]
            out_logits[todo[ok]] = logits[ok]
        return out, out_logits, found, first

    def _large_reps(self, model, x, y, target, seeds):
        epss = [3 * self.eps, 2 * self.eps, self.eps]
        iters = [math.ceil(0.3 * self.steps), math.ceil(0.3 * self.steps)]
        iters.append(self.steps - sum(iters))
        x_init, done = x + random_like(x, seeds, "normal"), 0
        for j, (eps, steps) in enumerate(zip(epss, iters)):
            x_init = self._project(x_init, x, eps)
            stop = j == len(epss) - 1 and self.early_stop
            x_found, logits, ok, it, x_init = self._run(model, x, y, target, x_init, steps, eps, stop)
            done += steps
        return x_found, logits, ok, it + done - steps

    def _robust(self, model, x, y):
        logits = self.predict_clean(model, x)
        if self.loss == "dlr" and logits.shape[1] < 3:
            raise RobustlabError(
                f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}", "use loss='ce'"
            )
        return logits, logits.argmax(1) == y

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        clean, robust = self._robust(model, x, y)
        idx = robust.nonzero().squeeze(1)
        x_adv, logits = x.clone(), clean.clone()
        self.last_success = ~robust
        self.last_iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
        if len(idx):
            out, found, ok, first = self._attack(model, x[idx], y[idx], None if seeds is None else seeds[idx], None)
            x_adv[idx], self.last_success[idx], self.last_iterations[idx] = out, ok, first
            logits[idx[ok]] = found[ok]
        self.keep_logits(torch.arange(len(x), device=x.device), logits)
        return x_adv


class APGDT(APGD):
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, run once per target class for
    the ``n_targets`` classes with the highest clean logits after the top one (9 in AutoAttack),
    each run attacking only the examples still correctly classified. Success means
    misclassification (AutoAttack's criterion), so it is untargeted in robustlab's sense.
    ``last_iterations`` counts iterations over all targets and restarts."""

    name = "apgdt"
    records_first_success = False
    label = "apgd-t"

    def __init__(
        self,
        eps: float = 0.3,
        norm: str = "linf",
        steps: int = 100,
        n_targets: int = 9,
        restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        large_reps: bool = False,
        early_stop: bool = True,
    ):
        super().__init__(eps, norm, "dlr", steps, restarts, rho, eot_iter, large_reps, early_stop)
        self.n_targets = check_count(n_targets, "n_targets")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        logits, robust = self._robust(model, x, y)
        if logits.shape[1] < 4:
            raise RobustlabError(
                f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}",
                "use APGD with loss='ce'",
            )
        ranked = logits.argsort(1, descending=True)
        x_adv, done, out_logits = x.clone(), ~robust, logits.clone()
        iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
        for k in range(1, min(self.n_targets, logits.shape[1] - 1) + 1):
            idx = (~done).nonzero().squeeze(1)
            if len(idx) == 0:
                break
            sd = salted(None if seeds is None else seeds[idx], 1000 * k)
            with progress.part(k - 1, min(self.n_targets, logits.shape[1] - 1)):
                out, found, ok, first = self._attack(model, x[idx], y[idx], sd, ranked[idx, k])
            x_adv[idx[ok]], done[idx[ok]], out_logits[idx[ok]] = out[ok], True, found[ok]
            iterations[idx] += first
        self.last_success, self.last_iterations = done, iterations
        self.keep_logits(torch.arange(len(x), device=x.device), out_logits)
        return x_adv
