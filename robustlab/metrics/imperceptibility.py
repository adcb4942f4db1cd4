"""ALD_p, ASS and PSD: how perceptible adversarial perturbations are (DEEPSEC Sec. II-B)."""

from robustlab.errors import RobustlabError
from robustlab.metrics.attack_metric import SuccessMean
from robustlab.metrics.functional import lp_distortion, perturbation_sensitivity_distance, ssim

SENSITIVITIES = ("inverse", "one_minus")


class ALDp(SuccessMean):
    """Average Lp distortion for p in {0, 2, inf}, over the successful adversarial examples; ``compute()``
    returns ``{"L0", "L2", "Linf"}``. An entry counts for L0 when its 8-bit value changes, ``|delta| >=
    0.5/255``, in both modes. ``normalized=True`` (default; comprehensive paper Eq. 4, DEEPSEC Sec. II-B):
    ``||x_adv - x||_p / ||x||_p`` (an all-zero clean image has none and is left out). ``normalized=False``
    (DEEPSEC's code): raw L2 and Linf, and L0 as the fraction of entries changed. See
    :func:`~robustlab.metrics.functional.lp_distortion`."""

    keys = ("L0", "L2", "Linf")
    higher_is_better = False

    def __init__(self, normalized: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.normalized = bool(normalized)

    def values(self, model, x, x_adv, y, adv_logits, target):
        return lp_distortion(x, x_adv, self.normalized)


class ASS(SuccessMean):
    """Average structural similarity ``(1/m) sum_i SSIM(x_adv_i, x_i)`` over the m successful adversarial
    examples (comprehensive paper Eq. 5). Standard SSIM on [0,1] images with data range 1 and a Gaussian
    11x11 window of sigma 1.5 (:func:`~robustlab.metrics.functional.ssim`, equal to scikit-image's), not
    DEEPSEC's 7x7 uniform window with data range 2 on 0-255 values."""

    higher_is_better = True

    def __init__(self, sigma: float = 1.5, **kwargs):
        super().__init__(**kwargs)
        self.sigma = float(sigma)

    def values(self, model, x, x_adv, y, adv_logits, target):
        return ssim(x_adv, x, sigma=self.sigma)


class PSD(SuccessMean):
    """Perturbation sensitivity distance ``(1/m) sum_i sum_j |delta_ij| Sen(R(x_ij))`` over the m successful
    adversarial examples (DEEPSEC Sec. II-B; comprehensive paper Eq. 6), with R the ``region`` x ``region``
    square (default 3, DEEPSEC's) around each entry of the clean image. ``sensitivity="inverse"`` (default,
    the papers): Sen = 1/std, std floored at ``std_floor`` (default 1/255) so that flat regions stay finite;
    ``sensitivity="one_minus"`` (DEEPSEC's code): Sen = 1 - std."""

    higher_is_better = False

    def __init__(self, region: int = 3, sensitivity: str = "inverse", std_floor: float = 1 / 255, **kwargs):
        super().__init__(**kwargs)
        if sensitivity not in SENSITIVITIES:
            raise RobustlabError(f"unknown PSD sensitivity {sensitivity!r}", f"use one of {', '.join(SENSITIVITIES)}")
        if not (isinstance(region, int) and region >= 1 and region % 2 == 1):
            raise RobustlabError(f"PSD region must be an odd integer >= 1, got {region!r}", "set region=3 (DEEPSEC)")
        if not std_floor > 0:
            raise RobustlabError(f"PSD std_floor must be > 0, got {std_floor!r}", "set std_floor=0.00392 (1/255)")
        self.region, self.sensitivity, self.std_floor = region, sensitivity, float(std_floor)

    def values(self, model, x, x_adv, y, adv_logits, target):
        return perturbation_sensitivity_distance(x, x_adv, self.region, self.sensitivity, self.std_floor)
