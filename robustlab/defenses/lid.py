"""LID (Ma et al. 2018): local intrinsic dimensionality of every layer's activations as detection
features, with a logistic-regression detector."""

from collections.abc import Callable, Mapping, Sequence

import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from robustlab.attacks.base import Attack, lp_norm, per_example, random_like
from robustlab.defenses.detector import Detector, DetectorDefense, fpr_threshold, plain
from robustlab.errors import RobustlabError
from robustlab.utils import eval_mode

#: Modules whose output is one LID feature (every call, in call order).
LAYERS = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def lid_mle(queries: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Maximum-likelihood LID estimate of each query (Ma et al. Eq. 3, Amsaleg et al.'s MLE):
    ``LID(x) = -(1/k * sum_{i<=k} log(r_i(x) / r_k(x)))^{-1}`` with ``r_i`` the distance from ``x``
    to its i-th nearest neighbour in ``reference``. Rows are flattened; computed in float64."""
    dist = torch.cdist(queries.flatten(1).double(), reference.flatten(1).double())
    nearest = dist.topk(k, 1, largest=False).values.clamp_min(1e-12)
    log_ratios = (nearest / nearest[:, -1:]).log().mean(1)
    return -1 / log_ratios.clamp_max(-1e-12)


class LIDDetector(Detector):
    """Score = logistic regression on standardised LID features (one per output of every layer of
    :data:`LAYERS` in ``net``), each estimated against the stored clean ``reference`` images with
    ``k`` nearest neighbours. ``forward`` is the plain classifier."""

    chunk = 100

    def __init__(
        self,
        net: nn.Module,
        k: int = 20,
        n_reference: int = 100,
        input_shape: Sequence[int] = (1, 28, 28),
        fpr: float = 0.05,
    ):
        super().__init__(net, 1, fpr)
        if not 1 <= k <= n_reference:
            raise RobustlabError(
                f"LID needs 1 <= k <= n_reference, got k={k}, n_reference={n_reference}",
                "lower defense.k or raise defense.n_reference",
            )
        self.k = k
        self.register_buffer("reference", torch.zeros(n_reference, *input_shape))
        with torch.no_grad(), eval_mode(net):
            n_features = len(self.activations(torch.zeros(1, *input_shape)))
        for name in ("mean", "coef"):
            self.register_buffer(name, torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.register_buffer("intercept", torch.zeros(1))

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every :data:`LAYERS` module call of ``net`` on ``x``, in call order."""
        outputs: list[torch.Tensor] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().flatten(1).clone()))
            for m in self.net.modules()
            if isinstance(m, LAYERS)
        ]
        try:
            self.net(x)
        finally:
            for hook in hooks:
                hook.remove()
        return outputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """LID features ``(B, n_layers)`` of ``x`` against the reference images."""
        with torch.no_grad():
            ref = self.activations(self.reference)
            return torch.cat(
                [
                    torch.stack([lid_mle(a, r, self.k) for a, r in zip(self.activations(chunk), ref)], 1)
                    for chunk in x.split(self.chunk)
                ]
            ).float()

    def decision(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.std) @ self.coef + self.intercept

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.decision(self.features(x))[:, None]


class LID(DetectorDefense):
    """Train the classifier on clean data; after each validation epoch fit the LID detector on the
    validation split, as Ma et al. Sec. 4: the first ``n_reference`` images (by index) become the
    reference set; on the correctly classified rest, each attack in ``attacks`` gives adversarial
    examples (positives, where it succeeds) and a noisy copy with Gaussian noise of the same L2 norm
    per example (negatives, with the clean images). Features are standardised, a logistic regression
    (inverse regularisation ``C``; Ma et al. cross-validate it) is fitted, and the threshold on its
    logit is set for ``fpr`` on all the clean non-reference validation images."""

    def __init__(
        self,
        net: nn.Module,
        attacks: Mapping[str, Attack],
        k: int = 20,
        n_reference: int = 100,
        C: float = 1.0,
        fpr: float = 0.05,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        if not hasattr(net, "in_channels") or not hasattr(net, "image_size"):
            raise RobustlabError(
                f"LID needs a robustlab model with in_channels and image_size, got {type(net).__name__}",
                "use a model from robustlab.models",
            )
        if not attacks:
            raise RobustlabError("LID got no attacks to fit its detector on", "set defense.attacks (e.g. fgsm and pgd)")
        shape = [net.in_channels, net.image_size, net.image_size]
        fpr = plain(fpr)
        node = {
            "_target_": f"{__name__}.LIDDetector",
            "k": k,
            "n_reference": n_reference,
            "input_shape": shape,
            "fpr": fpr,
        }
        super().__init__(
            net, LIDDetector(net, k, n_reference, shape, fpr), node, optimizer, scheduler, scheduler_interval
        )
        self.attacks, self.C = dict(attacks), C

    def calibrate(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        det = self.inference
        n_ref = len(det.reference)
        if len(x) <= n_ref:
            raise RobustlabError(
                f"LID needs more than n_reference={n_ref} validation images, got {len(x)}",
                "raise data.val_size or lower defense.n_reference",
            )
        det.reference.copy_(x[:n_ref])
        x, y, idx = x[n_ref:], y[n_ref:], idx[n_ref:]
        with torch.no_grad():
            correct = det(x).argmax(1) == y
        xc, yc, seeds = x[correct], y[correct], idx[correct].long()
        rows, labels = [det.features(xc)], [torch.zeros(len(xc))]
        for i, attack in enumerate(self.attacks.values()):
            x_adv = attack(det, xc, yc, seeds=seeds)
            ok = attack.last_success.cpu()
            noise = random_like(xc, seeds + (i + 1) * 1_000_003, "normal")
            scale = lp_norm(x_adv - xc, "l2") / lp_norm(noise, "l2").clamp_min(1e-12)
            x_noisy = (xc + per_example(scale, xc) * noise).clamp(0, 1)
            rows += [det.features(x_noisy), det.features(x_adv[ok.to(x_adv.device)])]
            labels += [torch.zeros(len(xc)), torch.ones(int(ok.sum()))]
        features, labels = torch.cat(rows).cpu(), torch.cat(labels)
        if labels.sum() == 0:
            raise RobustlabError(
                "LID found no successful adversarial validation example to fit its detector on",
                "use stronger defense.attacks or more validation images",
            )
        mean, std = features.mean(0), features.std(0).clamp_min(1e-12)
        fit = LogisticRegression(C=self.C, max_iter=1000).fit(
            ((features - mean) / std).double().numpy(), labels.numpy()
        )
        det.mean.copy_(mean)
        det.std.copy_(std)
        det.coef.copy_(torch.from_numpy(fit.coef_[0]))
        det.intercept.copy_(torch.from_numpy(fit.intercept_))
        det.threshold.copy_(fpr_threshold(det.batched_scores(x)[:, 0], det.fpr[0])[None])
