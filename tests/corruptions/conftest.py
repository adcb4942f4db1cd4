"""Real photos (scikit-image samples) as uint8 HxWx3 arrays and as a [0,1] batch."""

import numpy as np
import pytest
import torch

pytest.importorskip("imagecorruptions", reason="the reference package: pip install imagecorruptions-imaug")
skdata = pytest.importorskip("skimage.data")


def photos(size: int) -> list[np.ndarray]:
    from skimage.transform import resize

    out = []
    for load in (skdata.astronaut, skdata.chelsea, skdata.coffee):
        im = load()
        side = min(im.shape[:2])
        out.append((resize(im[:side, :side], (size, size), anti_aliasing=True) * 255).round().astype(np.uint8))
    return out


def as_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="session")
def photos64():
    return photos(64)
