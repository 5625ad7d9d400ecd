"""deploy.restore: inpainting keeps known pixels and beats mean fill; upscale is consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy import restore
from deploy.project import ProjectConfig
from deploy.projection_io import to_tensor
from training.networks.samples import to_uint8

CFG = dict(w_avg_samples=500, frames=0)


@pytest.fixture(scope="module")
def loaded_soft(export_uncond):
    """The tiny export with its ToRGB weights scaled down: the random network otherwise
    saturates half its pixels at 0/255 (no gradient through the clamp), unlike a trained one."""
    from deploy.generator import load_generator

    lg = load_generator(export_uncond)
    with torch.no_grad():
        for name, p in lg.generator.named_parameters():
            if ".torgb." in name and name.endswith("weight"):
                p.mul_(0.3)
    return lg


def _hole(n: int, size: int = 16) -> np.ndarray:
    holes = np.zeros((n, size, size), bool)
    holes[:, 4:12, 5:11] = True
    return holes


def test_inpaint_keeps_known_pixels_and_beats_mean_fill(loaded_uncond):
    images = loaded_uncond.generate([5, 6])
    holes = _hole(2)
    result = restore.inpaint(loaded_uncond, images, holes, ProjectConfig(steps=150, **CFG))
    np.testing.assert_array_equal(result.images[~holes], images[~holes])  # untouched, bit-exact
    mean_fill = images.copy()
    for i in range(2):
        mean_fill[i][holes[i]] = images[i][~holes[i]].mean(axis=0).round().astype(np.uint8)

    def hole_mse(x):
        return ((x.astype(float) - images.astype(float)) ** 2)[holes].mean()

    assert hole_mse(result.images) < 0.5 * hole_mse(mean_fill)


def test_feathered_composite_hides_a_brightness_offset():
    rng = np.random.RandomState(0)
    images = rng.randint(60, 200, size=(1, 16, 16, 3)).astype(np.uint8)
    generated = np.clip(images.astype(int) + 40, 0, 255).astype(np.uint8)  # right but too bright
    holes = _hole(1)
    plain = restore.composite(images, generated, holes, feather=0)
    feathered = restore.composite(images, generated, holes, feather=1.5)
    np.testing.assert_array_equal(plain[~holes], images[~holes])
    np.testing.assert_array_equal(feathered[~holes], images[~holes])
    err = lambda x: np.abs(x.astype(float) - images.astype(float))[holes].mean()  # noqa: E731
    assert err(feathered) < 0.5 * err(plain)


def test_upscale_downsamples_back_to_the_input(loaded_soft):
    high = loaded_soft.generate([8])
    assert ((high == 0) | (high == 255)).mean() < 0.05
    low = to_uint8(restore.downscale(to_tensor(high, torch.device("cpu")), 4))  # 4x
    result = restore.upscale(loaded_soft, low, ProjectConfig(steps=200, **CFG))
    assert result.images.shape == (1, 16, 16, 3)
    again = to_uint8(restore.downscale(to_tensor(result.images, torch.device("cpu")), 4))
    assert np.abs(again.astype(float) - low.astype(float)).mean() < 5.0  # of 255 levels


def test_bad_inputs_are_clear_errors(loaded_uncond, tmp_path):
    img = loaded_uncond.generate([0])
    with pytest.raises(ValueError, match="mask: shape"):
        restore.inpaint(loaded_uncond, img, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="whole image"):
        restore.inpaint(loaded_uncond, img, np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="valid sizes: 16, 8, 4, 2, 1"):
        restore.upscale(loaded_uncond, np.zeros((1, 5, 5, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="no such mask"):
        restore.load_mask(tmp_path / "nope.png", (16, 16))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable mask"):
        restore.load_mask(tmp_path / "bad.png", (16, 16))
