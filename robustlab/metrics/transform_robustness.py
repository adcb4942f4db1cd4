"""RGB and RIC: whether adversarial examples survive Gaussian blur and JPEG compression (DEEPSEC Sec. II-B)."""

import math

import torch
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.functional import gaussian_blur

from robustlab.errors import RobustlabError
from robustlab.metrics.attack_metric import SuccessMean
from robustlab.success import goal_met


class _StillSuccessful(SuccessMean):
    """Share of the successful adversarial examples that are still successful (misclassified, or classified
    as the target) after :meth:`transform`: ``sum_i 1[success(T(x_adv_i))] / sum_i 1[success(x_adv_i)]``."""

    higher_is_better = True  # for the attacker

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def values(self, model, x, x_adv, y, adv_logits, target):
        with torch.no_grad():
            pred = model(self.transform(x_adv)).argmax(1)
        return goal_met(pred, y, target)


class RGB(_StillSuccessful):
    """Robustness to Gaussian blur (DEEPSEC Sec. II-B): the share of successful adversarial examples still
    successful after a Gaussian blur of standard deviation ``radius`` (PIL's GaussianBlur radius; DEEPSEC
    0.5, other code 2), per channel, kernel ``2*ceil(3*radius)+1``, reflect padding
    (``torchvision.transforms.functional.gaussian_blur``)."""

    def __init__(self, radius: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if not radius > 0:
            raise RobustlabError(f"RGB radius must be > 0, got {radius!r}", "set radius=0.5 (DEEPSEC)")
        self.radius = float(radius)

    def transform(self, x):
        k = 2 * math.ceil(3 * self.radius) + 1
        return gaussian_blur(x, [k, k], [self.radius, self.radius])


class RIC(_StillSuccessful):
    """Robustness to image compression (DEEPSEC Sec. II-B): the share of successful adversarial examples still
    successful after JPEG compression at ``quality`` (DEEPSEC 90, with Guetzli; other code 55), here
    libjpeg through ``torchvision.io`` on the 8-bit image ``round(255 x)``; 1- or 3-channel images."""

    def __init__(self, quality: int = 90, **kwargs):
        super().__init__(**kwargs)
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise RobustlabError(
                f"RIC quality must be an integer in [1, 100], got {quality!r}", "set quality=90 (DEEPSEC)"
            )
        self.quality = quality

    def transform(self, x):
        if x.shape[1] not in (1, 3):
            raise RobustlabError(f"RIC needs 1- or 3-channel images, got {x.shape[1]}", "drop RIC for this data")
        images = list((x.detach() * 255).round().clamp(0, 255).to("cpu", torch.uint8))
        decoded = decode_jpeg(encode_jpeg(images, quality=self.quality))
        return (torch.stack(decoded).to(x.device, x.dtype)) / 255
