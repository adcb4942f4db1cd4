"""The 19 common corruptions of CIFAR-10-C / ImageNet-C at severities 1-5, batched in torch.

``corrupt(x, name, severity, generator=None, params="cifar")`` works on (B, C, H, W) float images in
[0, 1] with C in {1, 3} and H, W >= 32, on the device of ``x``. Randomness comes only from
``generator``: one ``torch.Generator`` for the batch, or per-sample :class:`~robustlab.rng.Streams` (then every
sample's corruption is independent of how the batch was formed). ``params="cifar"`` uses the CIFAR-10-C severity
tables, ``params="imagenet"`` those of the ``imagecorruptions`` package.

Grayscale images: noise, blur, geometric and contrast steps run per channel; colour steps use luma
(snow's brightening, spatter's and frost's colours, saturate through gray RGB and back); brightness
adds to the single channel. The reference package instead returns three channels for gray input.
"""

import torch

from robustlab.attacks.base import check_images as check_images_in_range
from robustlab.corruptions import blur, digital, noise, weather
from robustlab.corruptions._ops import Rng
from robustlab.corruptions.params import PARAMS
from robustlab.corruptions.perturbations import PERTURBATIONS, perturbation_sequence
from robustlab.errors import RobustlabError

BENCHMARK = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
HELD_OUT = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = BENCHMARK + HELD_OUT

_FUNCTIONS = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "speckle_noise": noise.speckle_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "gaussian_blur": blur.gaussian_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "spatter": weather.spatter,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "saturate": digital.saturate,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
}
# Where the CIFAR-10-C code differs from ImageNet-C beyond the numbers.
_CIFAR_VARIANT = {
    "zoom_blur": {"centered_trim": True},
    "snow": {"centered_trim": True},
    "pixelate": {"upsample": "box"},
    "elastic_transform": {"cifar": True},
    "frost": {"cifar": True},
}


def check_images(x: torch.Tensor, who: str = "corrupt") -> None:
    """Raise a one-line RobustlabError unless ``x`` is a (B, C, H, W) float batch in [0, 1] without NaN or
    inf, C in {1, 3}, H, W >= 32. The dtype, NaN and range rules are the attacks' ones
    (:func:`robustlab.attacks.base.check_images`), applied to the batch's min and max: they show NaN, inf
    and the range, in one pass instead of three."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise RobustlabError(
            f"{who} needs a (B, C, H, W) tensor with C in 1 or 3, got {shape}",
            "pass a batch such as x[None] for one image, as float in [0,1]",
        )
    if min(x.shape[-2:]) < 32:
        raise RobustlabError(
            f"{who} got {x.shape[-2]}x{x.shape[-1]} px images, corruptions need at least 32x32",
            "resize the images to 32 px or more first (e.g. MNIST 28 px -> 32 px)",
        )
    check_images_in_range(torch.stack(torch.aminmax(x)) if x.is_floating_point() else x, who)


def corrupt(
    x: torch.Tensor, name: str, severity: int, generator=None, params: str = "cifar", frost_textures: str = "procedural"
) -> torch.Tensor:
    """Corruption ``name`` at ``severity`` (1-5) of the batch ``x``; see the module docstring.
    ``frost_textures``: ``procedural`` (default, no files) or ``reference`` (the imagecorruptions photos)."""
    if name not in _FUNCTIONS:
        raise RobustlabError(f"unknown corruption {name!r}", f"use one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
        raise RobustlabError(f"severity {severity!r} is not in 1..5", "pass an integer severity from 1 to 5")
    if params not in PARAMS:
        raise RobustlabError(f"unknown parameter set {params!r}", "use params='cifar' or params='imagenet'")
    if frost_textures not in ("procedural", "reference"):
        raise RobustlabError(f"unknown frost_textures {frost_textures!r}", "use 'procedural' or 'reference'")
    check_images(x)
    rng = Rng(generator, x.shape[0], x.device)
    kwargs = dict(_CIFAR_VARIANT.get(name, {})) if params == "cifar" else {}
    if name == "frost":
        kwargs = {"cifar": params == "cifar", "textures": frost_textures}
    c = PARAMS[params][name][int(severity) - 1]
    with torch.no_grad():
        return _FUNCTIONS[name](x, c, rng, **kwargs).to(x.dtype)


__all__ = [
    "corrupt",
    "check_images",
    "BENCHMARK",
    "HELD_OUT",
    "CORRUPTIONS",
    "PARAMS",
    "PERTURBATIONS",
    "perturbation_sequence",
]
