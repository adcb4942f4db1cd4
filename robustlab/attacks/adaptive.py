"""Adaptive attacks on defended models (Athalye et al. 2018): EOT for inference-time randomness,
BPDA for non-differentiable preprocessing, and :func:`adapt`, which picks them from what the model declares
(:class:`~robustlab.models.base.DefendedModel`): a ``randomized`` forward -> :class:`EOT`; ``preprocessors()``,
non-differentiable, shape-preserving input transforms (``forward(x) == classifier(preprocess(x))``) ->
:class:`BPDA`.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from robustlab.attacks.base import Attack, Wrapper, check_count
from robustlab.errors import RobustlabError
from robustlab.models.base import preprocessors, randomized

#: Samples per gradient for randomised models (AutoAttack's "rand" version uses 20).
EOT_SAMPLES = 20
#: Draws per decision of a gradient-free attack on a randomised model, and per evaluation of its results.
EVAL_DRAWS = 10


class Expectation(nn.Module):
    """``forward(x)``: the mean of the logits of ``n`` independent forward passes of ``model``,
    so a gradient taken through it averages ``n`` samples of the randomness."""

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        self.model, self.n = model, n
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.n)]).mean(0)


class _Wrapper(Wrapper):
    def _run(self, model, x, y, seeds, target, clean_logits=None) -> torch.Tensor:
        x_adv = self.attack(model, x, y, seeds=seeds, target=target, clean_logits=clean_logits)
        self.last_iterations, self.last_queries = self.attack.last_iterations, self.attack.last_queries
        self.last_setup_seconds = self.attack.last_setup_seconds
        return x_adv


class EOT(_Wrapper):
    """Expectation over Transformation (Athalye et al. 2018): ``attack`` runs on
    :class:`Expectation` ``(model, n)``, so each of its gradients averages ``n`` stochastic
    forward passes (EOT on the logits), and each of its decisions (success, early stops, keeping the
    best iterate, reverting a failure to the clean image) is taken on the mean logits of ``n`` draws.
    The inner attack's success and logits are handed back as they are, never re-decided on one fresh
    draw. A black-box inner attack's query counts are multiplied by ``n`` (forward passes of the model)."""

    name = "eot"

    def __init__(self, attack: Attack, n: int = EOT_SAMPLES):
        super().__init__(attack)
        self.n = check_count(n, "n")

    def perturb(self, model, x, y, seeds=None, target=None):
        x_adv = self._run(Expectation(model, self.n), x, y, seeds, target)
        self.last_success = self.attack.last_success
        self.keep_logits(torch.arange(len(x), device=x.device), self.attack.last_logits)
        if self.last_queries is not None:
            self.last_queries = self.last_queries * self.n
        return x_adv


@contextmanager
def straight_through(transforms: list[nn.Module]) -> Iterator[list[int]]:
    """Within the block, each module in ``transforms`` passes its forward value but the identity
    gradient (``x + (t(x) - x).detach()``), via a forward hook. Yields a one-item list counting
    the hooked calls."""
    calls = [0]

    def hook(module, inputs, output):
        (x,) = inputs
        if output.shape != x.shape:
            raise RobustlabError(
                f"BPDA needs a shape-preserving transform, but {type(module).__name__} maps "
                f"{tuple(x.shape)} to {tuple(output.shape)}",
                "give BPDA a transform whose output has its input's shape",
            )
        calls[0] += 1
        return x + (output - x).detach()

    handles = [t.register_forward_hook(hook) for t in transforms]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


class BPDA(_Wrapper):
    """Backward Pass Differentiable Approximation (Athalye et al. 2018) with the identity:
    ``attack`` sees the defended model end to end, with ``transform`` (default: every
    preprocessor the model declares) applied in the forward pass and skipped in the backward
    pass. The forward values are the defended model's, so the inner attack's logits and success are its."""

    name = "bpda"

    def __init__(self, attack: Attack, transform: nn.Module | None = None):
        super().__init__(attack)
        self.transform = transform

    def perturb(self, model, x, y, seeds=None, target=None):
        transforms = [self.transform] if self.transform is not None else preprocessors(model)
        if not transforms:
            raise RobustlabError(
                "BPDA found no transform: the model declares no preprocessors",
                "pass BPDA(attack, transform=<the model's non-differentiable module>)",
            )
        with straight_through(transforms) as calls:
            x_adv = self._run(model, x, y, seeds, target, self._clean)
        if calls[0] == 0:
            raise RobustlabError(
                "BPDA's transform was never called by the model's forward",
                "pass a transform module that the model itself applies to its input",
            )
        self.last_success = self.attack.last_success
        self.keep_logits(torch.arange(len(x), device=x.device), self.attack.last_logits)
        return x_adv


def _layers(attack: Attack) -> set[type]:
    kinds = set()
    while isinstance(attack, _Wrapper):
        kinds.add(type(attack))
        attack = attack.attack
    return kinds


def adapt(attack: Attack, model: nn.Module, eot_samples: int = EOT_SAMPLES, draws: int = EVAL_DRAWS) -> Attack:
    """``attack`` made adaptive to ``model``'s inference-time defense, as the model declares it
    (:class:`~robustlab.models.base.DefendedModel`): a white-box attack is wrapped in :class:`BPDA` if the model
    has preprocessors and in :class:`EOT` over ``eot_samples`` passes if it is randomized; a black-box (or
    transfer) attack on a randomized model is wrapped in :class:`EOT` over ``draws`` passes, so that its
    queries and early stops see the expected prediction rather than one noisy draw. Attacks already so
    wrapped are left as they are."""
    present = _layers(attack)
    if EOT not in present and randomized(model):
        attack = EOT(attack, eot_samples if attack.kind == "whitebox" else draws)
    if attack.kind == "whitebox" and BPDA not in present and preprocessors(model):
        attack = BPDA(attack)
    return attack
