"""Universal adversarial perturbations (Moosavi-Dezfooli et al., CVPR 2017)."""

import torch
from torch import nn

from robustlab import progress
from robustlab.attacks.base import Attack, check_count, check_eps, check_images, check_norm, lp_norm
from robustlab.attacks.deepfool import DeepFool
from robustlab.errors import RobustlabError
from robustlab.rng import Streams
from robustlab.success import goal_met
from robustlab.utils import timed


class UAP(Attack):
    """One image-agnostic perturbation ``v`` with ``||v||_p <= eps``, fitted on a set and added to
    any batch: ``clip(x + v, 0, 1)`` (Moosavi-Dezfooli et al. 2017, Alg. 1).

    :meth:`fit` keeps the fitting samples the model classifies correctly and makes passes over
    them in a seeded random order. Each sample that ``v`` does not fool yet gets the DeepFool
    perturbation ``dv`` of ``clip(x + v)`` (``deepfool_steps`` iterations, ``overshoot``; samples
    where DeepFool does not converge add nothing) and ``v <- P(v + dv)``, the projection onto the
    ``eps`` ball (Linf: clipping; L2: rescaling). ``chunk`` samples get their DeepFool steps
    at the same ``v`` and are then added one by one; ``chunk=1`` is the paper's algorithm. After
    each pass the fooling rate on the fitting set (share misclassified under ``v``) is measured;
    fitting stops once it reaches ``fooling_rate`` or after ``passes`` passes, keeping the
    ``v`` with the highest fooling rate seen. ``fit_fooling_rate`` and ``fit_passes`` record it.

    Calling the attack applies ``v``; an unfitted attack first fits itself on the validation split
    of ``fit_data`` (a datamodule; the first ``fit_size`` samples; the training split when it attacks
    validation batches, see :meth:`reset`), disjoint from the test split
    it is then evaluated on. Where ``v`` does not fool an example the clean image is returned,
    so MR on a test split is the held-out fooling rate.

    DEEPSEC: eps 0.3 / 0.1 (Linf), target fooling rate 0.35 / 0.9, 20 passes, DeepFool 10
    iterations (overshoot 0.02).
    """

    name = "uap"
    clean_on_failure = True

    def __init__(
        self,
        eps: float = 0.3,
        norm: str = "linf",
        fooling_rate: float = 0.35,
        passes: int = 20,
        deepfool_steps: int = 10,
        overshoot: float = 0.02,
        chunk: int = 1,
        fit_data=None,
        fit_size: int | None = None,
    ):
        super().__init__()
        self.eps, self.norm = check_eps(eps), check_norm(norm, ("linf", "l2"))
        if isinstance(fooling_rate, bool) or not isinstance(fooling_rate, (int, float)) or not 0 <= fooling_rate <= 1:
            raise RobustlabError(
                f"fooling_rate must lie in [0,1], got {fooling_rate!r}", "use e.g. 0.35 (DEEPSEC MNIST)"
            )
        self.fooling_rate, self.passes = float(fooling_rate), check_count(passes, "passes")
        self.deepfool = DeepFool(steps=deepfool_steps, overshoot=overshoot)
        self.chunk = check_count(chunk, "chunk")
        self.fit_data, self.fit_size = fit_data, None if fit_size is None else check_count(fit_size, "fit_size")
        self.perturbation: torch.Tensor | None = None
        self.fit_split, self._self_fitted = "val", False
        self.fit_fooling_rate: float | None = None
        self.fit_passes = 0

    def __repr__(self) -> str:
        return (
            f"UAP(eps={self.eps}, norm={self.norm}, fooling_rate={self.fooling_rate}, passes={self.passes}, "
            f"deepfool={self.deepfool!r}, chunk={self.chunk}, fit_size={self.fit_size})"
        )

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return v.clamp(-self.eps, self.eps)
        return v * (self.eps / lp_norm(v, "l2").clamp_min(1e-12)).clamp(max=1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``clip(x + v, 0, 1)`` with the fitted ``v``."""
        if self.perturbation is None:
            raise RobustlabError(
                "UAP has not been fitted", "call uap.fit(model, x_fit, y_fit) first or give it fit_data"
            )
        return (x + self.perturbation.to(x)).clamp(0, 1)

    @torch.no_grad()
    def _fooled(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, batch: int = 500):
        return torch.cat(
            [
                goal_met(model((x[s : s + batch] + v).clamp(0, 1)).argmax(1), y[s : s + batch])
                for s in range(0, len(x), batch)
            ]
        )

    def fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor | None = None) -> "UAP":
        """Fit ``v`` on ``(x, y)``; ``seeds`` (one int per sample, default its index) fix the order
        of the samples in each pass, whatever their order in ``x``. Returns ``self``."""
        check_images(x, "UAP.fit")
        x, y = x.detach(), y.to(x.device)
        seeds = torch.arange(len(x)) if seeds is None else torch.as_tensor(seeds)
        with torch.no_grad():
            correct = torch.cat([model(x[s : s + 500]).argmax(1) for s in range(0, len(x), 500)]) == y
        if not correct.any():
            raise RobustlabError("UAP.fit got no sample the model classifies correctly", "fit on labelled clean data")
        x, y, seeds = x[correct], y[correct], seeds[correct.cpu()]
        v = torch.zeros_like(x[:1])
        best, best_rate, streams = v, -1.0, Streams(seeds, device=x.device)
        for p in range(self.passes):
            order = streams.uniform(1)[:, 0].argsort()
            for s in range(0, len(order), self.chunk):
                progress.step(p * len(order) + s, self.passes * len(order))
                idx = order[s : s + self.chunk]
                idx = idx[~self._fooled(model, x[idx], y[idx], v)]
                if len(idx) == 0:
                    continue
                x_in = (x[idx] + v).clamp(0, 1)
                with progress.part(p * len(order) + s, self.passes * len(order)):
                    dv = self.deepfool(model, x_in, y[idx]) - x_in
                for r in dv[self.deepfool.last_success]:
                    v = self._project(v + r)
            rate = self._fooled(model, x, y, v).float().mean().item()
            if rate > best_rate:
                best, best_rate = v, rate
            self.fit_passes = p + 1
            if rate >= self.fooling_rate:
                break
        self.perturbation, self.fit_fooling_rate = best.detach(), best_rate
        return self

    def fooling_rate_on(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of the samples the model classifies correctly that ``v`` makes misclassified (DEEPSEC MR)."""
        with torch.no_grad():
            correct = model(x).argmax(1) == y.to(x.device)
        if not correct.any():
            return float("nan")
        return self._fooled(model, x[correct], y.to(x.device)[correct], self.perturbation.to(x)).float().mean().item()

    def reset(self, stage: str) -> None:
        """A new stage: a perturbation this attack fitted itself is dropped, to be refitted on the current model,
        on the split disjoint from the one scored: the training split when validation batches are attacked (during
        training), the validation split when test batches are. A perturbation given by :meth:`fit` is kept."""
        if self._self_fitted:
            self.perturbation, self._self_fitted = None, False
        self.fit_split = "train" if stage == "validate" else "val"

    def _fit_on_data(self, model: nn.Module, device: torch.device) -> None:
        if self.fit_data is None:
            raise RobustlabError(
                "UAP has not been fitted and has no fit_data",
                "call uap.fit(model, x_fit, y_fit) first or give it fit_data (a datamodule)",
            )
        self.fit_data.setup()
        split = self.fit_data.unaugmented_train_set() if self.fit_split == "train" else self.fit_data.val_set
        n = len(split) if self.fit_size is None else min(self.fit_size, len(split))
        items = [split[i] for i in range(n)]
        x = torch.stack([torch.as_tensor(item[0]) for item in items]).to(device)
        y = torch.tensor([int(item[1]) for item in items], device=device)
        self.fit(model, x, y, torch.tensor([int(item[2]) for item in items]))

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        if self.perturbation is None:
            self.last_setup_seconds = timed(lambda: self._fit_on_data(model, x.device), x.device)
            self._self_fitted = True
        if self.perturbation.shape[1:] != x.shape[1:]:
            raise RobustlabError(
                f"UAP was fitted on images shaped {tuple(self.perturbation.shape[1:])}, got {tuple(x.shape[1:])}",
                "fit it on data shaped like the batches it attacks",
            )
        return self.apply(x)
