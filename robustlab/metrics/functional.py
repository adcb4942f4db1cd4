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


def mean_corruption_error(errors: torch.Tensor, baseline_errors: torch.Tensor | None = None) -> torch.Tensor:
    """mCE over an error table ``errors[c, s]`` (corruption c, severity s), Hendrycks & Dietterich 2019,
    Sec. 4: ``CE_c = sum_s E(s,c) / sum_s E_base(s,c)``, ``mCE = mean_c CE_c``. Without a baseline, the
    unnormalised mean corruption error ``mean_{c,s} E(s,c)`` (the CIFAR-10-C convention)."""
    errors = errors.double()
    if baseline_errors is None:
        return errors.mean()
    return (errors.sum(1) / baseline_errors.double().sum(1)).mean()


def relative_mean_corruption_error(errors: torch.Tensor, clean_error: torch.Tensor,
                                   baseline_errors: torch.Tensor | None = None,
                                   baseline_clean_error: torch.Tensor | None = None) -> torch.Tensor:
    """Relative mCE (Hendrycks & Dietterich 2019, Sec. 4): ``RelCE_c = sum_s (E(s,c) - E_clean) /
    sum_s (E_base(s,c) - E_base,clean)``, averaged over c. Without a baseline, the unnormalised
    ``mean_{c,s} (E(s,c) - E_clean)``."""
    gap = errors.double() - clean_error.double()
    if baseline_errors is None:
        return gap.mean()
    base_gap = baseline_errors.double() - baseline_clean_error.double()
    return (gap.sum(1) / base_gap.sum(1)).mean()


def mean_flip_rate(flip_probabilities: torch.Tensor, baseline_flip_probabilities: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """mFR (Hendrycks & Dietterich 2019, Sec. 4, ImageNet-P): ``FR_p = FP_p / FP_p^base`` with ``FP_p`` the
    probability that the prediction flips between consecutive frames of perturbation p (against the first
    frame for noise sequences), ``mFR = mean_p FR_p``. Without a baseline, the unnormalised ``mean_p FP_p``."""
    fp = flip_probabilities.double()
    if baseline_flip_probabilities is None:
        return fp.mean()
    return (fp / baseline_flip_probabilities.double()).mean()
