"""Pure formulas behind the metrics: rates on already-reduced counts and per-example summands."""

import warnings

import torch

from robustlab.errors import RobustlabError


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


#: How an unnormalised mCE reduces the severities: "mean" (the CIFAR-10-C convention) or "sum" (Eq. 12).
SEVERITY_REDUCTIONS = ("mean", "sum")


def _unnormalised(table: torch.Tensor, severities: str) -> torch.Tensor:
    """``mean_{c,s}`` of ``table[c, s]`` (``severities="mean"``) or ``mean_c sum_s`` (``"sum"``)."""
    if severities not in SEVERITY_REDUCTIONS:
        raise RobustlabError(
            f"unknown severity reduction {severities!r}", f"use one of {', '.join(SEVERITY_REDUCTIONS)}"
        )
    return table.mean() if severities == "mean" else table.sum(1).mean()


def mean_corruption_error(
    errors: torch.Tensor, baseline_errors: torch.Tensor | None = None, severities: str = "mean"
) -> torch.Tensor:
    """mCE over an error table ``errors[c, s]`` (corruption c, severity s), Hendrycks & Dietterich 2019,
    Sec. 4: ``CE_c = sum_s E(s,c) / sum_s E_base(s,c)``, ``mCE = mean_c CE_c``. Without a baseline, the
    unnormalised mean corruption error: ``mean_{c,s} E(s,c)`` (``severities="mean"``, default, the CIFAR-10-C
    convention, in [0, 1]) or the comprehensive paper's Eq. 12, ``mean_c sum_s E(s,c)`` (``"sum"``)."""
    errors = errors.double()
    if baseline_errors is None:
        return _unnormalised(errors, severities)
    return (errors.sum(1) / baseline_errors.double().sum(1)).mean()


def relative_mean_corruption_error(
    errors: torch.Tensor,
    clean_error: torch.Tensor,
    baseline_errors: torch.Tensor | None = None,
    baseline_clean_error: torch.Tensor | None = None,
    severities: str = "mean",
) -> torch.Tensor:
    """Relative mCE (Hendrycks & Dietterich 2019, Sec. 4): ``RelCE_c = sum_s (E(s,c) - E_clean) /
    sum_s (E_base(s,c) - E_base,clean)``, averaged over c. Without a baseline, the unnormalised
    ``mean_{c,s} (E(s,c) - E_clean)`` (``severities="sum"``: ``mean_c sum_s``, as :func:`mean_corruption_error`)."""
    gap = errors.double() - clean_error.double()
    if baseline_errors is None:
        return _unnormalised(gap, severities)
    base_gap = baseline_errors.double() - baseline_clean_error.double()
    return (gap.sum(1) / base_gap.sum(1)).mean()


def mean_flip_rate(
    flip_probabilities: torch.Tensor, baseline_flip_probabilities: torch.Tensor | None = None
) -> torch.Tensor:
    """mFR (Hendrycks & Dietterich 2019, Sec. 4, ImageNet-P): ``FR_p = FP_p / FP_p^base`` with ``FP_p`` the
    probability that the prediction flips between consecutive frames of perturbation p (against the first
    frame for noise sequences), ``mFR = mean_p FR_p``. Without a baseline, the unnormalised ``mean_p FP_p``."""
    fp = flip_probabilities.double()
    if baseline_flip_probabilities is None:
        return fp.mean()
    return (fp / baseline_flip_probabilities.double()).mean()


def adversarial_class_confidence(adv_logits: torch.Tensor) -> torch.Tensor:
    """Per-example ``P(x_adv)_{F(x_adv)}``, the confidence of the predicted (adversarial) class: the summand
    of DEEPSEC's ACAC (Sec. II-B). The comprehensive paper's Eq. 9 prints ``P_{y_i}``, a typo its text
    ("confidence towards the incorrect class") and DEEPSEC contradict."""
    return adv_logits.double().softmax(1).amax(1)


def true_class_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``P(x)_y``: the summand of ACTC (DEEPSEC Sec. II-B; comprehensive paper Eq. 10)."""
    return logits.double().softmax(1).gather(1, y[:, None]).squeeze(1)


def noise_tolerance(adv_logits: torch.Tensor) -> torch.Tensor:
    """Per-example ``P(x_adv)_{F(x_adv)} - max_{j != F(x_adv)} P(x_adv)_j``, the gap between the two largest
    probabilities: the summand of NTE (DEEPSEC Sec. II-B; comprehensive paper Eq. 11)."""
    top = adv_logits.double().softmax(1).topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


#: The smallest change of a pixel that moves its 8-bit value: half a grey level.
EIGHT_BIT_CHANGE = 0.5 / 255


def lp_distortion(x: torch.Tensor, x_adv: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Per-example ``(L0, L2, Linf)`` distortions, shape ``(B, 3)``: the summands of ALD_p.

    L0 counts an entry as changed when its 8-bit value changes, ``|x_adv - x| >= 0.5/255``, in both modes: the
    float-precision jitter of a tanh round trip (CW2, OptMargin) or a dense sub-grey-level change (DeepFool, BLB)
    is not a changed pixel (``delta != 0`` once made L0 about 1 for every L2 attack).
    ``normalized=True`` (comprehensive paper Eq. 4, DEEPSEC Sec. II-B): ``||x_adv - x||_p / ||x||_p``, NaN
    where ``||x||_p = 0``. ``normalized=False`` (DEEPSEC's code): raw L2 and Linf of the perturbation, and L0
    as the fraction of entries changed."""
    x, x_adv = x.double().flatten(1), x_adv.double().flatten(1)
    delta = x_adv - x
    l0, l2, linf = (delta.abs() >= EIGHT_BIT_CHANGE).double().sum(1), delta.norm(dim=1), delta.abs().amax(1)
    if not normalized:
        return torch.stack([l0 / x.shape[1], l2, linf], 1)
    dist = torch.stack([l0, l2, linf], 1)
    size = torch.stack([(x != 0).double().sum(1), x.norm(dim=1), x.abs().amax(1)], 1)
    return torch.where(size > 0, dist / size.clamp_min(torch.finfo(size.dtype).tiny), torch.nan)


def ssim(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """Per-example SSIM (Wang et al. 2004) of ``(B, C, H, W)`` images in [0,1], the summand of ASS
    (comprehensive paper Eq. 5): Gaussian window ``sigma`` 1.5 truncated at 3.5 sigma (11x11), K1 0.01,
    K2 0.03, data range 1, population (co)variances, valid window positions only, mean over channels and
    positions. Equals ``skimage.metrics.structural_similarity(data_range=1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, channel_axis=0)``."""
    radius = int(truncate * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        raise RobustlabError(
            f"SSIM needs images of at least {2 * radius + 1} px, got {tuple(x.shape[-2:])}",
            "use a smaller sigma or larger images",
        )
    x, y = x.double(), y.double()
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = (-(t**2) / (2 * sigma**2)).exp()
    k = k / k.sum()
    c = x.shape[1]

    def window_mean(z):
        z = torch.nn.functional.conv2d(z, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return torch.nn.functional.conv2d(z, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    mx, my = window_mean(x), window_mean(y)
    vx, vy, cov = window_mean(x * x) - mx**2, window_mean(y * y) - my**2, window_mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def perturbation_sensitivity_distance(
    x: torch.Tensor, x_adv: torch.Tensor, region: int = 3, sensitivity: str = "inverse", std_floor: float = 1 / 255
) -> torch.Tensor:
    """Per-example ``sum_j |delta_j| Sen(R(x_j))``, the summand of PSD (DEEPSEC Sec. II-B; comprehensive
    paper Eq. 6). ``R(x_j)`` is the ``region`` x ``region`` square around entry j of the clean image, per
    channel, reflect-padded at the border; its std is the population std.

    ``sensitivity="inverse"`` (the papers): ``Sen = 1 / max(std, std_floor)``; a flat region (std 0), where
    1/std is infinite, gets the large finite ``1 / std_floor`` (default: one 8-bit grey level).
    ``sensitivity="one_minus"`` (DEEPSEC's code): ``Sen = 1 - std``."""
    padded = torch.nn.functional.pad(x.double(), (region // 2,) * 4, mode="reflect")
    mean = torch.nn.functional.avg_pool2d(padded, region, stride=1)
    std = (torch.nn.functional.avg_pool2d(padded**2, region, stride=1) - mean**2).clamp_min(0).sqrt()
    sen = 1 - std if sensitivity == "one_minus" else 1 / std.clamp_min(std_floor)
    return ((x_adv.double() - x.double()).abs() * sen).flatten(1).sum(1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-row Jensen-Shannon divergence in nats, ``KL(p||m)/2 + KL(q||m)/2`` with ``m = (p+q)/2``: the
    summand of COS (DEEPSEC Sec. II-D; comprehensive paper Eq. 19). Equals
    ``scipy.spatial.distance.jensenshannon(p, q) ** 2`` (scipy returns the distance, its square root)."""
    p, q = p.double(), q.double()
    m = (p + q) / 2
    return ((torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1) + (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)) / 2
