"""Targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), as run inside AutoAttack."""

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.apgd import salted
from robustlab.attacks.base import Attack, check_count, check_eps, check_norm, lp_norm, per_example, random_like
from robustlab.errors import RobustlabError
from robustlab.success import goal_met


def project_hyperplane_box(p: torch.Tensor, w: torch.Tensor, tau: torch.Tensor, norm: str) -> torch.Tensor:
    """Smallest ``d`` in ``norm`` (linf or l2) with ``w . d = tau`` and ``p + d`` in [0,1], per row of
    the ``(N, n)`` inputs; where the box makes the hyperplane unreachable, the box corner that gets
    closest to it. Exact: with ``room_i`` the distance to the box along ``sign(w_i)``, the optimum is
    ``d_i = sign(w_i) min(s, room_i)`` (linf) or ``sign(w_i) min(s |w_i|, room_i)`` (l2), and
    ``w . d`` is piecewise linear in ``s``, so ``s`` is read off the sorted breakpoints."""
    flip = torch.where(tau < 0, -1.0, 1.0)
    w, tau = w * flip[:, None], tau.abs()
    room = torch.where(w > 0, 1 - p, torch.where(w < 0, p, torch.zeros_like(p)))
    slope = w.abs() if norm == "linf" else w * w
    cap = w.abs() * room
    bend = torch.where(slope > 0, cap / slope.clamp_min(1e-30), torch.zeros_like(p))
    bend, order = bend.sort(1)
    slope, cap = slope.gather(1, order), cap.gather(1, order)
    below = torch.cumsum(cap, 1) - cap
    above = slope.flip(1).cumsum(1).flip(1)
    reach = below + bend * above
    k = (reach < tau[:, None]).sum(1, keepdim=True)
    feasible = k.squeeze(1) < p.shape[1]
    k = k.clamp(max=p.shape[1] - 1)
    s = (tau[:, None] - below.gather(1, k)) / above.gather(1, k).clamp_min(1e-30)
    s = torch.where(feasible[:, None], s, bend[:, -1:]).clamp_min(0)
    scale = s if norm == "linf" else s * w.abs()
    return w.sign() * torch.minimum(scale, room)


class FABT(Attack):
    """FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
    boundary attack"), the targeted version used by AutoAttack: for each of the ``n_targets``
    classes with the highest clean logits after the top one, ``steps`` iterations of projecting the
    current point ``x1`` and the clean point ``x0`` onto the linearised boundary between the label
    and the target (intersected with the [0,1] box), then
    ``x1 <- clip((x1 + eta d1)(1 - a) + (x0 + eta d2) a)`` with ``a = min(|d1| / (|d1| + |d2|), alpha_max)``,
    and a backward step ``x0 + beta (x1 - x0)`` after each success. Norms ``linf`` and ``l2``.

    An example counts as broken once a misclassified point within ``eps`` is found. With ``early_stop``
    (default) it is not attacked further and that point is returned; ``early_stop=False`` runs every step of that
    target's run, as FAB does, and returns the smallest misclassified point it found (the same examples are
    broken: the run of one example does not depend on the others). Where it failed, the clean image.
    ``restarts`` > 1 adds runs from random points of radius ``eps / 2`` (per-example seeds).
    ``last_iterations``: iterations spent per example over all targets and restarts.
    """

    name = "fabt"
    label = "fab-t"
    clean_on_failure = True

    def __init__(
        self,
        eps: float = 0.3,
        norm: str = "linf",
        steps: int = 100,
        n_targets: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        early_stop: bool = True,
    ):
        super().__init__()
        self.eps, self.norm = check_eps(eps), check_norm(norm, ("linf", "l2"))
        self.steps, self.n_targets = check_count(steps, "steps"), check_count(n_targets, "n_targets")
        self.restarts = check_count(restarts, "restarts")
        if not 0 <= alpha_max <= 1 or eta < 1 or not 0 < beta <= 1:
            raise RobustlabError(
                f"FAB needs alpha_max in [0,1], eta >= 1, beta in (0,1], got {alpha_max}, {eta}, {beta}",
                "use alpha_max 0.1, eta 1.05, beta 0.9 (Croce & Hein)",
            )
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        self.early_stop = bool(early_stop)

    def _boundary(self, model, x1, y, t):
        """``z_t - z_y`` and its input gradient."""
        xg = x1.detach().requires_grad_(True)
        logits = model(xg)
        diff = logits.gather(1, t[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(diff.sum(), xg)
        return diff.detach(), grad

    def _run(self, model, x0, y, t, x1):
        """One FAB-T run; returns the misclassified point within ``eps`` (or ``x0``), its logits (``None`` if
        no example was broken), the success mask and the iterations spent per example."""
        n = len(x0)
        out, found, out_logits = x0.clone(), torch.zeros(n, dtype=torch.bool, device=x0.device), None
        spent = torch.full((n,), self.steps, dtype=torch.long, device=x0.device)
        s = {
            "i": torch.arange(n, device=x0.device),
            "x0": x0,
            "y": y,
            "t": t,
            "x1": x1,
            "best": torch.full((n,), float("inf"), device=x0.device),
        }
        for it in range(self.steps):
            progress.step(it, self.steps)
            f, g = self._boundary(model, s["x1"], s["y"], s["t"])
            m = len(f)
            w = g.flatten(1)
            base = s["x1"].flatten(1)
            taus = torch.cat([-f, -f - (w * (s["x0"].flatten(1) - base)).sum(1)])
            d = project_hyperplane_box(torch.cat([base, s["x0"].flatten(1)]), torch.cat([w, w]), taus, self.norm)
            size = lp_norm(d, self.norm).clamp_min(1e-8)
            a = (size[:m] / (size[:m] + size[m:])).clamp(0, self.alpha_max)
            d1, d2, a = d[:m].view_as(s["x0"]), d[m:].view_as(s["x0"]), per_example(a, s["x0"])
            x1 = ((s["x1"] + self.eta * d1) * (1 - a) + (s["x0"] + self.eta * d2) * a).clamp(0, 1)
            with torch.no_grad():
                logits = model(x1)
            adv = goal_met(logits.argmax(1), s["y"])
            dist = lp_norm(x1 - s["x0"], self.norm)
            better = adv & (dist < s["best"])
            s["best"] = torch.where(better, dist, s["best"])
            done = better & (dist <= self.eps)
            s["x1"] = torch.where(per_example(adv, x1), s["x0"] + self.beta * (x1 - s["x0"]), x1)
            if done.any():
                hit = s["i"][done]
                out[hit], found[hit] = x1[done], True
                if out_logits is None:
                    out_logits = logits.new_zeros(n, logits.shape[1])
                out_logits[hit] = logits[done]
                if self.early_stop:
                    spent[hit] = it + 1
                    s = {k: v[~done] for k, v in s.items()}
                    if len(s["i"]) == 0:
                        break
        return out, out_logits, found, spent

    def _start(self, x0, seeds, restart):
        if restart == 0:
            return x0.clone()
        noise = 2 * random_like(x0, seeds) - 1 if self.norm == "linf" else random_like(x0, seeds, "normal")
        noise = noise / per_example(lp_norm(noise, self.norm).clamp_min(1e-12), x0)
        return (x0 + 0.5 * self.eps * noise).clamp(0, 1)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        logits = self.predict_clean(model, x)
        if logits.shape[1] < 2:
            raise RobustlabError(
                f"FABT needs at least 2 classes, the model has {logits.shape[1]}", "use an attack for one-class models"
            )
        ranked = logits.argsort(1, descending=True)
        done = goal_met(logits.argmax(1), y)
        x_adv, adv_logits = x.clone(), logits.clone()
        spent = torch.zeros(len(x), dtype=torch.long, device=x.device)
        for k in range(1, min(self.n_targets, logits.shape[1] - 1) + 1):
            for r in range(self.restarts):
                idx = (~done).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                sd = salted(None if seeds is None else seeds[idx], 1000 * k + r)
                with progress.part(
                    (k - 1) * self.restarts + r, min(self.n_targets, logits.shape[1] - 1) * self.restarts
                ):
                    out, out_logits, ok, it = self._run(
                        model, x[idx], y[idx], ranked[idx, k], self._start(x[idx], sd, r)
                    )
                x_adv[idx[ok]], done[idx[ok]] = out[ok], True
                if ok.any():
                    adv_logits[idx[ok]] = out_logits[ok]
                spent[idx] += it
        self.last_success, self.last_iterations = done, spent
        self.keep_logits(torch.arange(len(x), device=x.device), adv_logits)
        return x_adv
