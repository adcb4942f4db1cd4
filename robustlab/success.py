"""What counts as a successful attack, defined once for attacks, metrics and evaluations."""

import torch


def goal_met(pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per example, whether predictions ``pred`` meet an attack's goal: anything but the label ``y``
    (untargeted), or the ``target`` class (targeted, when ``target`` is given)."""
    return pred == target if target is not None else pred != y


def attack_success(
    clean_pred: torch.Tensor, adv_pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Per example, success as DEEPSEC's MR counts it: the clean prediction is correct and the adversarial
    one meets the goal (:func:`goal_met`)."""
    return (clean_pred == y) & goal_met(adv_pred, y, target)
