"""EIT: bit depth, JPEG and TV minimisation against hand values and PIL; the transform is random and
detached; the defense retrains on transformed images, reloads as the wrapper and evaluates."""

import io

import numpy as np
import torch
from PIL import Image

from robustlab.defenses.eit import EITClassifier, EITTransform
from robustlab.defenses.transforms import bit_depth, crop_rescale, jpeg, tv_minimise
from robustlab.models.base import preprocessors, randomized
from tests.defenses.helpers import train_reload_evaluate


def test_bit_depth_matches_hand_values():
    x = torch.tensor([0.0, 0.03, 0.04, 0.5, 0.7, 1.0])
    # 4 bits: 15 steps; 0.03*15 = 0.45 -> 0, 0.04*15 = 0.6 -> 1, 7.5 -> 8 (half to even, as np.rint), 10.5 -> 10
    assert torch.equal(bit_depth(x, 4), torch.tensor([0, 0, 1, 8, 10, 15]) / 15)
    assert torch.equal(bit_depth(x, 1), torch.tensor([0.0, 0, 0, 0, 1, 1]))


def test_jpeg_equals_pil_at_the_same_quality():
    torch.manual_seed(0)
    for channels in (1, 3):
        x = torch.rand(3, channels, 28, 28)
        expected = []
        for img in x:
            arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(arr[..., 0] if channels == 1 else arr).save(buf, format="jpeg", quality=85)
            expected.append(np.asarray(Image.open(buf), dtype=np.float32).reshape(28, 28, channels) / 255)
        got = jpeg(x, 85)
        assert torch.equal(got, torch.tensor(np.stack(expected)).permute(0, 3, 1, 2))
        assert (got - x).abs().mean() > 0.01, "the compression is lossy"


def test_tv_minimisation_matches_the_closed_form_of_a_step_edge():
    # Image a | b split after column k: the anisotropic ROF solution keeps the halves flat at
    # a + 1/(w k) and b - 1/(w (W - k)) (each row's jump costs 1, the fidelity w/2 per pixel).
    h, w_, k, a, b, w = 6, 10, 4, 0.2, 0.9, 5.0
    x = torch.full((1, 1, h, w_), b, dtype=torch.float64)
    x[..., :k] = a
    u = tv_minimise(x, w, steps=1000)
    expected = torch.full_like(x, b - 1 / (w * (w_ - k)))
    expected[..., :k] = a + 1 / (w * k)
    assert torch.allclose(u, expected, atol=1e-4)
    # Dropped pixels (mask 0) are filled in by the TV term, whatever their value was.
    noisy, mask = x.clone(), torch.ones_like(x)
    noisy[0, 0, 2, 1], noisy[0, 0, 4, 7] = 1.0, 0.0
    mask[0, 0, 2, 1] = mask[0, 0, 4, 7] = 0
    assert torch.allclose(tv_minimise(noisy, w, mask, steps=1000), expected, atol=5e-3)


def test_crop_rescale_is_a_rescaled_window():
    x = torch.arange(36.0).view(1, 1, 6, 6).repeat(8, 1, 1, 1)
    out = crop_rescale(x, 3, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for o in out:
        window = o[0, ::2, ::2]  # nearest upscaling x2 repeats each pixel of the 3x3 window
        top, left = divmod(int(window[0, 0]), 6)
        assert torch.equal(window, x[0, 0, top : top + 3, left : left + 3]) and top <= 3 and left <= 3


def test_transform_is_random_detached_and_wraps_the_classifier():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    wrapper = EITClassifier(net, crop_size=26, tv_steps=20)
    assert randomized(wrapper) and preprocessors(wrapper) == [wrapper.preprocess] and wrapper.classifier is net
    assert isinstance(wrapper.preprocess, EITTransform)
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    torch.manual_seed(0)
    z = wrapper.preprocess(x)
    assert not z.requires_grad and z.shape == x.shape
    assert torch.equal(z * 15, (z * 15).round()), "ends with 4-bit quantisation"
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(wrapper(x), net(z)), "forward == classifier(preprocess(x))"
    torch.manual_seed(0)
    out = wrapper(x)
    assert torch.allclose(out, net(z), atol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (straight,) = torch.autograd.grad(net(z.requires_grad_(True)).sum(), z)
    assert torch.allclose(grad, straight), "BPDA: the classifier's gradient at preprocess(x), passed straight through"
    assert not torch.equal(wrapper.preprocess(x), z), "fresh randomness on each call"


def test_eit_trains_on_transformed_images_reloads_and_evaluates(tmp_path, mnist_test_batch):
    _, model = train_reload_evaluate(tmp_path, "eit", ["defense.tv_steps=20"], *mnist_test_batch)
    assert isinstance(model, EITClassifier) and model.preprocess.crop_size == 26 and model.preprocess.bits == 4
