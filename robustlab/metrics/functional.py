"""Pure formulas behind the metrics, on already-reduced counts."""
import warnings

import torch


def ratio(numerator: torch.Tensor, denominator: torch.Tensor, what: str) -> torch.Tensor:
    """``numerator / denominator``; NaN with a warning (never a crash or a silent 0) if empty."""
    if denominator == 0:
        warnings.warn(f"{what}: empty denominator, returning NaN", RuntimeWarning, stacklevel=3)
        return torch.tensor(float("nan"))
    return numerator.double() / denominator.double()


def classification_accuracy(correct: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """CA = (1/N) sum_i 1[F(x_i) = y_i] (comprehensive-evaluation paper, Sec. III-B, CA)."""
    return ratio(correct, total, "CA")


def misclassification_ratio(fooled: torch.Tensor, clean_correct: torch.Tensor) -> torch.Tensor:
    """MR = (1/N) sum_i 1[F(x_i^adv) != y_i] over the N clean-correct examples (DEEPSEC Sec. II-B,
    Eq. for MR; untargeted variant). Targeted attacks count ``F(x_i^adv) = t_i`` instead."""
    return ratio(fooled, clean_correct, "MR")
