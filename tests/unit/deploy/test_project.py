"""deploy.project, latent_spaces, projection_io: projection recovers the model's own samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy import project as proj
from deploy import projection_io
from deploy.distance import LPIPS, build_distance, pixel_distance

FAST = dict(w_avg_samples=500, frames=4)


def _err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=(1, 2, 3))


def make_progan_export(out):
    from training.networks import build_networks
    from training.networks.config import ModelConfig
    from training.networks.export import save_export

    torch.manual_seed(3)
    cfg = ModelConfig(family="progan", z_dim=16, channel_base=256, channel_max=32)
    generator, _, g_kwargs, _ = build_networks(cfg, 16, 3, 0)
    return save_export(out, generator, family="progan", kwargs=g_kwargs)


def test_schedules_match_nvlabs():
    cfg = proj.ProjectConfig()
    assert proj.lr_at(cfg, 0.0) == 0.0  # ramps up from 0
    assert proj.lr_at(cfg, 0.5) == pytest.approx(0.1)  # flat in the middle
    assert proj.lr_at(cfg, 0.9) < 0.1 and proj.lr_at(cfg, 0.999) < 1e-3  # cosine ramp-down
    assert proj.latent_noise_at(cfg, 0.0, 2.0) == pytest.approx(0.1)
    assert proj.latent_noise_at(cfg, 0.75, 2.0) == 0.0


def test_noise_regularizer_white_vs_smooth():
    gen = torch.Generator().manual_seed(0)
    white = torch.randn([1, 1, 32, 32], generator=gen)
    smooth = torch.nn.functional.avg_pool2d(white, 3, 1, 1)
    smooth = smooth / smooth.std()  # same variance: only the correlation differs
    assert proj.noise_regularizer([smooth]) > 20 * proj.noise_regularizer([white])


def test_pixel_distance_zero_on_equal_and_ignores_masked_pixels():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand([2, 3, 16, 16], generator=gen) * 2 - 1
    assert torch.allclose(pixel_distance(a, a), torch.zeros(2))
    b = a.clone()
    b[:, :, :8] = -a[:, :, :8]  # differs only in the top half
    mask = torch.ones([2, 1, 16, 16])
    mask[:, :, :8] = 0
    assert torch.allclose(pixel_distance(b, a, mask), torch.zeros(2), atol=1e-6)
    assert (pixel_distance(b, a) > 0.1).all()


def test_projection_w_recovers_own_sample(loaded_uncond, tmp_path):
    target = loaded_uncond.generate([5, 6])
    start = loaded_uncond.generate_latents(np.zeros((1, 16)), psi=0.0)  # the w_avg image
    cfg = proj.ProjectConfig(steps=150, optimize_noise=False, **FAST)
    result = proj.project(loaded_uncond, target, cfg)
    err = _err(result.images, target)
    assert (err < 2.0).all(), err  # mean abs error in uint8 levels
    assert (_err(start, target) > 30).all()
    assert result.space == "w" and result.distance == "pixel-multiscale"
    assert result.latents.shape == (2, loaded_uncond.generator.num_ws, 16)
    assert np.allclose(result.latents[:, 0], result.latents[:, -1])  # one w for all layers
    # The saved latent (with its noise maps) renders the projected image again.
    written = projection_io.save_projection(result, target[0], tmp_path, "stylegan2")
    assert set(written) == {"target", "projected", "latent", "progress"}
    np.testing.assert_array_equal(
        projection_io.render_latent(loaded_uncond, written["latent"]), result.images[:1]
    )
    from PIL import Image

    gif = Image.open(written["progress"])
    assert gif.n_frames >= 2 and gif.size == (32, 16)  # target | projection side by side


def test_projection_default_optimises_noise_and_wplus(loaded_uncond, tmp_path):
    target = loaded_uncond.generate([7])
    start = loaded_uncond.generate_latents(np.zeros((1, 16)), psi=0.0)
    result = proj.project(loaded_uncond, target, proj.ProjectConfig(steps=60, space="w+", **FAST))
    assert result.space == "w+" and set(result.noise)  # noise maps were optimised
    assert not np.allclose(result.latents[0, 0], result.latents[0, -1])  # one w per layer
    assert _err(result.images, target)[0] < 0.5 * _err(start, target)[0]
    path = projection_io.save_latent(result, tmp_path / "w.safetensors", "stylegan2")
    np.testing.assert_array_equal(projection_io.render_latent(loaded_uncond, path), result.images)


def test_projection_progan_z(tmp_path):
    from deploy.generator import load_generator

    lg = load_generator(make_progan_export(tmp_path / "progan"))
    target = lg.generate([11])
    cfg = proj.ProjectConfig(steps=150, init_candidates=8, **FAST)
    result = proj.project(lg, target, cfg)
    assert result.space == "z" and result.latents.shape == (1, 1, 16) and not result.noise
    # Better than the best random start, and close to the target.
    with torch.no_grad():
        target_t = projection_io.to_tensor(target, lg.device)
        gen = torch.Generator().manual_seed(0)
        z = torch.randn([8, 16], generator=gen)
        best_start = pixel_distance(
            lg.generator(z).clamp(-1, 1), target_t.expand(8, -1, -1, -1)
        ).min()
    assert result.losses[0] < 0.5 * float(best_start)
    path = projection_io.save_latent(result, tmp_path / "z.safetensors", "progan")
    np.testing.assert_array_equal(projection_io.render_latent(lg, path), result.images)


def test_conditional_w_projection_with_and_without_label(loaded_cond):
    target = loaded_cond.generate([3], labels=[1])
    for labels in (None, [1]):
        result = proj.project(
            loaded_cond, target, proj.ProjectConfig(steps=5, **FAST), labels=labels
        )
        assert result.images.shape == target.shape


def test_lpips_from_local_safetensors_only(loaded_uncond, tmp_path):
    from safetensors.torch import save_file

    from deploy.distance import VGG16Features

    torch.manual_seed(0)
    state = {
        f"features.{k}": v.contiguous() for k, v in VGG16Features().features.state_dict().items()
    }
    save_file(state, str(tmp_path / "vgg16.safetensors"))
    lpips = LPIPS(tmp_path / "vgg16.safetensors")
    a = torch.rand([1, 3, 16, 16]) * 2 - 1
    assert float(lpips(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(lpips(a, -a)) > 0
    cfg = proj.ProjectConfig(steps=2, lpips_weights=str(tmp_path / "vgg16.safetensors"), **FAST)
    result = proj.project(loaded_uncond, loaded_uncond.generate([1]), cfg)
    assert result.distance.startswith("lpips-vgg16")
    with pytest.raises(ValueError, match="lpips needs"):
        build_distance("lpips", None, torch.device("cpu"))
    (tmp_path / "vgg16.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="never loaded"):
        LPIPS(tmp_path / "vgg16.pt")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        LPIPS(tmp_path / "missing.safetensors")


def test_bad_targets_are_one_line_errors(loaded_uncond):
    with pytest.raises(ValueError, match="channels"):
        proj.project(loaded_uncond, np.zeros((16, 16, 1), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        proj.project(loaded_uncond, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="project.space"):
        proj.ProjectConfig(space="x")
