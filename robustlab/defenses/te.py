"""Thermometer encoding (Buckman et al. 2018) trained with LS-PGA adversarial training.

With ``l`` levels, pixel value ``v`` falls in bucket ``k(v) = #{i >= 1 : v >= i/l}`` (buckets of
width ``1/l``); its thermometer code has ``l`` bits ``tau_i = 1[k(v) >= i] = 1[v >= i/l]``
(``tau_0`` is always 1) and decodes to the quantised value ``k / (l - 1)``. An image with C channels
becomes ``l * C`` channels, level-major within each input channel (channel ``c * l + i``).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.base import Attack, check_count, check_eps, random_like
from robustlab.checkpoint import META_KEY
from robustlab.defenses.pgd_at import PGDAdversarialTraining
from robustlab.errors import RobustlabError
from robustlab.models.base import DefendedModel, ImageClassifier
from robustlab.models.normalize import Normalize


def _edges(levels: int, like: torch.Tensor) -> torch.Tensor:
    """The bucket edges ``i / l``, i = 0..l-1, as one tensor so that every comparison uses the same floats."""
    return torch.arange(levels, device=like.device, dtype=like.dtype) / levels


def bucket(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Bucket index ``k(x)`` in ``0..levels-1`` of every pixel."""
    return (x[..., None] >= _edges(levels, x)).sum(-1) - 1


def quantise(x: torch.Tensor, levels: int) -> torch.Tensor:
    """The value the encoding keeps: ``k(x) / (levels - 1)``."""
    return bucket(x, levels).to(x.dtype) / (levels - 1)


def encode(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Thermometer code ``(B, C * levels, H, W)`` of [0,1] images ``(B, C, H, W)`` (not differentiable)."""
    code = (x[:, :, None] >= _edges(levels, x)[:, None, None]).to(x.dtype)
    return code.flatten(1, 2)


def decode(code: torch.Tensor, levels: int) -> torch.Tensor:
    """Inverse of :func:`encode` on its image: the quantised images ``k / (levels - 1)``."""
    b, cl, h, w = code.shape
    return (code.view(b, cl // levels, levels, h, w).sum(2) - 1) / (levels - 1)


def soft_encode(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Piecewise-linear thermometer ``clamp(levels * x - i + 1, 0, 1)``: equal to :func:`encode` on
    bucket edges, a ramp across each bucket otherwise (the BPDA surrogate of Athalye et al. 2018)."""
    i = torch.arange(levels, device=x.device, dtype=x.dtype)[:, None, None]
    return (levels * x[:, :, None] - i + 1).clamp(0, 1).flatten(1, 2)


def thermometer_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """Relaxed thermometer ``tau_i = sum_{j >= i} p_j`` of bucket probabilities ``(..., levels)``."""
    return probs.flip(-1).cumsum(-1).flip(-1)


class Quantise(nn.Module):
    """TE's input transform ``x -> k(x) / (levels - 1)`` (same shape). It has no gradient, so it
    passes the gradient straight through (BPDA): a plain gradient attack is already adaptive."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (quantise(x, self.levels) - x).detach()


class Thermometer(nn.Module):
    """Encode [0,1] images: the exact thermometer code as value, the :func:`soft_encode` gradient."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        soft = soft_encode(x, self.levels)
        return encode(x, self.levels) + soft - soft.detach()


def _widen_input(net: ImageClassifier, levels: int) -> None:
    """Make ``net`` take the ``levels * C`` code channels: its first convolution gets ``levels``
    times the input channels (freshly initialised) and its normalisation maps {0, 1} to {-1, 1}."""
    channels = net.in_channels
    for parent in net.net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == channels:
                setattr(
                    parent,
                    name,
                    nn.Conv2d(
                        channels * levels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        child.dilation,
                        child.groups,
                        child.bias is not None,
                        child.padding_mode,
                    ),
                )
                net.normalize = Normalize([0.5] * channels * levels, [0.5] * channels * levels)
                net.in_channels = channels * levels
                return
    raise RobustlabError(
        f"{type(net).__name__} has no convolution taking its {channels} input channels",
        "use a convolutional model from robustlab.models with thermometer encoding",
    )


class ThermometerClassifier(DefendedModel):
    """``forward(x) = classifier(preprocess(x))``: ``preprocess`` quantises (its gradient is BPDA's
    straight-through one), ``classifier`` encodes (:class:`Thermometer`) and runs ``net``, whose input
    is widened to the code's channels. ``in_channels``/``image_size``/``num_classes`` are the image's."""

    def __init__(self, net: ImageClassifier, levels: int = 16):
        super().__init__()
        check_count(levels, "levels", 2)
        self.levels, self.in_channels = levels, net.in_channels
        self.image_size, self.num_classes = net.image_size, net.num_classes
        _widen_input(net, levels)
        self.preprocess = Quantise(levels)
        self.classifier = nn.Sequential(Thermometer(levels), net)

    def preprocessors(self) -> list[nn.Module]:
        return [self.preprocess]

    @property
    def encoded(self) -> nn.Module:
        """The network on thermometer codes (``levels * C`` channels)."""
        return self.classifier[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.preprocess(x))


class LSPGA(Attack):
    """Logit-space projected gradient ascent (Buckman et al. Alg. 3, as their code) on a
    :class:`ThermometerClassifier`: per pixel, logits ``u`` over the buckets reachable within the
    Linf ``eps`` ball (random normal start, seeded per example); ``steps`` times, feed the relaxed
    code ``thermometer_from_probs(softmax(u * inv_temp))`` to ``model.encoded``, ascend the
    cross-entropy by ``u += step * grad`` and multiply ``inv_temp`` by ``anneal``. The final code is
    each pixel's most likely bucket, returned as the image in the ball nearest to ``x`` in that bucket
    (so ``model(x_adv)`` sees exactly that code)."""

    name = "lspga"
    #: Its step is in logit space: the training schedule scales only eps.
    budget_fields = ("eps",)

    def __init__(self, eps: float = 0.3, steps: int = 7, step: float = 1.0, inv_temp: float = 1.0, anneal: float = 1.2):
        super().__init__()
        self.eps, self.steps = check_eps(eps), check_count(steps, "steps", 0)
        self.step, self.inv_temp, self.anneal = float(step), float(inv_temp), float(anneal)

    def reachable(self, x: torch.Tensor, levels: int) -> torch.Tensor:
        """Mask ``(B, C, H, W, levels)`` of the buckets some image in the ball reaches."""
        lo, hi = bucket((x - self.eps).clamp(0, 1), levels), bucket((x + self.eps).clamp(0, 1), levels)
        j = torch.arange(levels, device=x.device)
        return (j >= lo[..., None]) & (j <= hi[..., None])

    def relaxed(self, logits: torch.Tensor, mask: torch.Tensor, inv_temp: float) -> torch.Tensor:
        """Relaxed code ``(B, C * levels, H, W)`` of masked bucket logits ``(B, C, H, W, levels)``."""
        probs = F.softmax((logits * inv_temp).masked_fill(~mask, float("-inf")), -1)
        return thermometer_from_probs(probs).permute(0, 1, 4, 2, 3).flatten(1, 2)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seeds=None, target=None) -> torch.Tensor:
        levels = getattr(model, "levels", None)
        if not isinstance(model, ThermometerClassifier):
            raise RobustlabError(
                f"LS-PGA attacks thermometer-encoded models, got {type(model).__name__}",
                "use it on a te checkpoint (robustlab.defenses.te.ThermometerClassifier)",
            )
        mask = self.reachable(x, levels)
        logits = random_like(mask.to(x.dtype), seeds, "normal")
        inv_temp = self.inv_temp
        for _ in range(self.steps):
            logits.requires_grad_(True)
            loss = F.cross_entropy(model.encoded(self.relaxed(logits, mask, inv_temp)), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, logits)
            logits = logits.detach() + self.step * grad
            inv_temp *= self.anneal
        k = logits.masked_fill(~mask, float("-inf")).argmax(-1)
        edges = _edges(levels, x)[k]
        own = bucket(x, levels)
        below = torch.maximum(edges, (x - self.eps).clamp_min(0))
        return torch.where(k < own, below, torch.where(k > own, edges, x))


class ThermometerEncoding(PGDAdversarialTraining):
    """TE: train a :class:`ThermometerClassifier` on LS-PGA examples (``loss`` and warm-up as in
    :class:`PGDAdversarialTraining`). The checkpoint's model config becomes the wrapper's, so
    ``load_model`` returns the encoded classifier with ``preprocess``/``classifier`` exposed."""

    def __init__(
        self,
        net: ImageClassifier,
        attack: LSPGA,
        levels: int = 16,
        loss: str = "adversarial",
        adv_weight: float = 0.5,
        warmup_epochs: float = 0.0,
        attack_mode: str = "eval",
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
    ):
        super().__init__(
            ThermometerClassifier(net, levels),
            attack,
            loss,
            adv_weight,
            warmup_epochs,
            attack_mode,
            optimizer,
            scheduler,
            scheduler_interval,
        )
        self.levels = levels

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        model = {
            "_target_": f"{__name__}.ThermometerClassifier",
            "levels": self.levels,
            "net": self.robustlab_meta["model"],
        }
        checkpoint[META_KEY] = {**self.robustlab_meta, "model": model}
