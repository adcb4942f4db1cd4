"""Glass blur's batched pixel shuffle equals the reference's sequential sweep."""

import pytest
import torch

from robustlab.corruptions.blur import _local_copies


def _sweep(x, delta, offsets):
    """The ImageNet-C loop as numpy runs it on colour images: pixel (h, w) takes the value of (h+dy, w+dx)."""
    x = x.clone()
    _, _, h, w = x.shape
    for n in range(x.shape[0]):
        for i, r in enumerate(range(h - delta, delta, -1)):
            for j, c in enumerate(range(w - delta, delta, -1)):
                dy, dx = offsets[n, i, j].tolist()
                x[n, :, r, c] = x[n, :, r + dy, c + dx]
    return x


@pytest.mark.parametrize("shape, delta", [((2, 3, 32, 32), 1), ((2, 3, 32, 32), 2), ((1, 1, 33, 40), 4)])
def test_local_copies_equal_the_sequential_sweep(shape, delta):
    g = torch.Generator().manual_seed(delta)
    x = torch.rand(shape, generator=g)
    offsets = torch.randint(-delta, delta, (shape[0], shape[2] - 2 * delta, shape[3] - 2 * delta, 2), generator=g)
    assert torch.equal(_local_copies(x, delta, offsets), _sweep(x, delta, offsets))
