"""MART (Wang et al. 2020): misclassification-aware adversarial training."""

import torch
import torch.nn.functional as F

from robustlab.defenses.adversarial import RegularisedAdversarialTraining


def mart_loss(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """MART Eq. 9: ``BCE(p(x_adv), y) + beta * KL(p(x) || p(x_adv)) * (1 - p_y(x))``, where the
    boosted CE adds ``-log(1 - max_{k != y} p_k(x_adv))`` to the CE on x_adv; batch mean."""
    p_adv, p = F.softmax(logits_adv, 1), F.softmax(logits, 1)
    runner_up = p_adv.scatter(1, y[:, None], float("-inf")).argmax(1)
    boost = -torch.log(1.0001 - p_adv.gather(1, runner_up[:, None]).squeeze(1) + 1e-12)
    bce = F.cross_entropy(logits_adv, y, reduction="none") + boost
    kl = (p * (torch.log(p + 1e-12) - torch.log(p_adv + 1e-12))).sum(1)
    return (bce + beta * kl * (1 - p.gather(1, y[:, None]).squeeze(1))).mean()


class MART(RegularisedAdversarialTraining):
    """Minimise :func:`mart_loss` on PGD (cross-entropy) examples."""

    objective = staticmethod(mart_loss)
