"""Shot noise: the table-inversion sampler draws exact Poisson counts; off-grid values use torch.poisson."""

import numpy as np
import pytest
import torch

from robustlab.corruptions import noise
from robustlab.corruptions._ops import Rng

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("c", [3, 60, 500])
def test_shot_noise_counts_are_poisson_on_the_8bit_grid(c):
    for level in (1, 40, 128, 255):
        x = torch.full((20, 3, 32, 32), level / 255)
        y = noise.shot_noise(x, c, Rng(torch.Generator().manual_seed(level), 20, x.device))
        counts = torch.round(y * c).long().flatten().numpy()
        lam = c * level / 255
        ks = np.arange(max(0, int(lam - 5 * lam**0.5)), min(c, int(lam + 5 * lam**0.5) + 2))
        expected = stats.poisson.pmf(ks, lam) * counts.size
        keep = expected > 20
        observed = np.array([(counts == k).sum() for k in ks])[keep]
        chi2 = ((observed - expected[keep]) ** 2 / expected[keep]).sum()
        assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4, (c, level)
    assert torch.equal(noise.shot_noise(torch.zeros(2, 3, 32, 32), c, Rng(None, 2, None)), torch.zeros(2, 3, 32, 32))


def test_shot_noise_off_the_grid_and_mixed():
    x = torch.full((40, 3, 32, 32), 0.3337)
    x[:, 0] = 77 / 255
    y = noise.shot_noise(x, 60, Rng(torch.Generator().manual_seed(0), 40, x.device))
    for ch, value in ((0, 77 / 255), (1, 0.3337)):
        counts = y[:, ch] * 60
        assert counts.mean().item() == pytest.approx(60 * value, rel=0.02)
        assert counts.var().item() == pytest.approx(60 * value, rel=0.05)
        assert torch.allclose(counts, counts.round(), atol=1e-4)
