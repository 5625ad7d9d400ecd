"""Progressive-growing schedule: (resolution, alpha, batch, lr) at hand-computed positions,
real-image fading by hand, and the ProGAN presets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from training.growth import (
    GrowthConfig,
    Phase,
    batch_for,
    downsample_reals,
    growth_end_kimg,
    growth_phase,
    lr_for,
)

# start 4, stable 20 kimg, fade 10 kimg, final 32:
#   [0, 20k) 4 stable | [20k, 30k) 8 fade | [30k, 50k) 8 stable | [50k, 60k) 16 fade |
#   [60k, 80k) 16 stable | [80k, 90k) 32 fade | [90k, ...) 32 stable
CFG = GrowthConfig(
    start_resolution=4,
    fade_kimg=10,
    stable_kimg=20,
    batch_per_resolution={"4": 64, "8": 64, "32": 16},
    lr_per_resolution={"32": 0.0015},
)


@pytest.mark.parametrize(
    "images_seen, expected",
    [
        (0, (4, 1.0, 0, 0, False)),
        (19_999, (4, 1.0, 0, 0, False)),
        (20_000, (8, 0.0, 1, 20_000, True)),
        (25_000, (8, 0.5, 1, 20_000, True)),
        (29_999, (8, 0.9999, 1, 20_000, True)),
        (30_000, (8, 1.0, 2, 30_000, False)),
        (49_999, (8, 1.0, 2, 30_000, False)),
        (52_500, (16, 0.25, 3, 50_000, True)),
        (60_000, (16, 1.0, 4, 60_000, False)),
        (88_000, (32, 0.8, 5, 80_000, True)),
        (90_000, (32, 1.0, 6, 90_000, False)),
        (10_000_000, (32, 1.0, 6, 90_000, False)),
    ],
)
def test_growth_phase_at_hand_computed_positions(images_seen, expected):
    phase = growth_phase(images_seen, CFG, final_resolution=32)
    resolution, alpha, index, start, fading = expected
    assert (phase.resolution, phase.phase_index, phase.phase_start_images, phase.fading) == (
        resolution,
        index,
        start,
        fading,
    )
    assert phase.alpha == pytest.approx(alpha)


def test_batch_and_lr_follow_the_phase():
    # (kimg, batch, lr): defaults 32 and 0.001 where the tables have no entry
    for kimg, batch, lr in [(5, 64, 0.001), (25, 64, 0.001), (55, 32, 0.001), (85, 16, 0.0015)]:
        resolution = growth_phase(int(kimg * 1000), CFG, 32).resolution
        assert batch_for(resolution, CFG, 32) == batch
        assert lr_for(resolution, CFG, 0.001) == pytest.approx(lr)


def test_growth_end_and_edge_cases():
    assert growth_end_kimg(CFG, 32) == pytest.approx(20 + 3 * 30)
    # starting at the final resolution: one stable phase forever
    only = GrowthConfig(start_resolution=16, fade_kimg=1, stable_kimg=1)
    assert growth_phase(5_000_000, only, 16) == Phase(
        resolution=16, alpha=1.0, phase_index=0, phase_start_images=0, fading=False
    )
    # no fade: a new resolution starts at alpha 1 directly in its stable phase
    no_fade = GrowthConfig(fade_kimg=0, stable_kimg=1)
    assert growth_phase(1_000, no_fade, 16) == Phase(
        resolution=8, alpha=1.0, phase_index=2, phase_start_images=1_000, fading=False
    )
    assert growth_phase(2_500, no_fade, 16).resolution == 16
    with pytest.raises(ValueError, match="final_resolution"):
        growth_phase(0, CFG, 2)
    with pytest.raises(ValueError, match="final_resolution"):
        growth_phase(0, GrowthConfig(start_resolution=64), 32)
    with pytest.raises(ValueError, match="images_seen"):
        growth_phase(-1, CFG, 32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        growth_phase(0, CFG, 32).alpha = 0.5  # type: ignore[misc]


def test_config_validation_and_yaml_int_keys():
    cfg = GrowthConfig(batch_per_resolution={4: 128, "8": 64}, lr_per_resolution={1024: 0.0015})
    assert cfg.batch_per_resolution == {"4": 128, "8": 64} and cfg.lr_per_resolution == {
        "1024": 0.0015
    }
    assert (
        batch_for(4, cfg, 16) == 128
        and batch_for(16, cfg, 16) == 16
        and lr_for(1024, cfg, 0.001) == 0.0015
    )
    for bad in (
        {"start_resolution": 6},
        {"stable_kimg": 0},
        {"fade_kimg": -1},
        {"batch_per_resolution": {"12": 8}},
        {"batch_per_resolution": {"8": 0}},
        {"batch_per_resolution": {"8": 2.5}},
        {"lr_per_resolution": {"x": 0.1}},
    ):
        with pytest.raises(ValueError):
            GrowthConfig(**bad)


def box(x: torch.Tensor, factor: int) -> torch.Tensor:  # independent of avg_pool2d
    n, c, h, w = x.shape
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


def test_downsample_reals_by_hand():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    target = box(images, 4)  # 8x8
    coarse = box(images, 8).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 4x4 -> 8x8
    assert torch.allclose(downsample_reals(images, 8, 1.0), target, atol=1e-6)
    assert torch.allclose(downsample_reals(images, 8, 0.0), coarse, atol=1e-6)
    assert torch.allclose(downsample_reals(images, 8, 0.3), 0.7 * coarse + 0.3 * target, atol=1e-6)
    assert torch.allclose(
        downsample_reals(images, 8, torch.tensor(0.3)), 0.7 * coarse + 0.3 * target, atol=1e-6
    )
    assert torch.equal(
        downsample_reals(images, 32, 1.0), images
    )  # identity at the shard resolution
    assert downsample_reals(images, 4).shape == (2, 3, 4, 4)
    for bad in (64, 12):
        with pytest.raises(ValueError, match="resolution"):
            downsample_reals(images, bad)


def test_downsample_reals_matches_the_generator_fade():
    """Faded reals live in the same space as faded fakes: both are lerp(up(coarse), fine, alpha)."""
    from training.networks.progan import Generator

    torch.manual_seed(0)
    generator = Generator(
        z_dim=4, c_dim=0, img_resolution=16, img_channels=1, channel_base=32, channel_max=4
    )
    z = torch.randn(2, 4)
    with torch.no_grad():
        at_zero = generator(z, resolution=16, alpha=0.0)
        # a G output at alpha 0 is piecewise constant on 2x2 blocks, so D sees no 16 px detail
        # in it; the reals at alpha 0 must have the same property
        assert torch.allclose(at_zero, downsample_reals(at_zero, 16, 0.0), atol=1e-6)
    reals = downsample_reals(torch.randn(2, 1, 16, 16), 16, 0.0)
    assert torch.equal(reals, reals[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3))


PRESETS_DIR = __import__("pathlib").Path(__file__).resolve().parents[3] / "pipeline" / "presets"


def test_progan_paper_preset_loads_with_the_reference_schedule():
    from pipeline.config import load_config
    from training.networks.progan import channels_at

    cfg = load_config("progan-paper")
    assert (
        cfg.model.family == "progan" and cfg.loss.kind == "wgan-gp" and cfg.prep.resolution == 1024
    )
    g = cfg.growth
    # minibatch_dict {4: 128, ..., 512: 4}, minibatch_base 4 at 1024; G/D_lrate_dict {1024: 0.0015}
    assert [batch_for(r, g, cfg.train.batch) for r in (4, 32, 64, 128, 256, 512, 1024)] == [
        128,
        64,
        32,
        16,
        8,
        4,
        4,
    ]
    assert lr_for(512, g, cfg.train.lr_g) == 0.001 and lr_for(1024, g, cfg.train.lr_d) == 0.0015
    assert tuple(cfg.train.betas) == (0.0, 0.99)
    # 600 kimg stable at 4, then 600 fade + 600 stable per resolution: 1024 fades in at 9000 kimg
    assert growth_phase(9_300_000, g, 1024) == Phase(
        resolution=1024, alpha=0.5, phase_index=15, phase_start_images=9_000_000, fading=True
    )
    assert growth_end_kimg(g, 1024) == 10_200 <= cfg.train.total_kimg
    # the paper's feature maps (table 2): 512 up to 32 px, then halving to 16 at 1024
    maps = [channels_at(2**i, cfg.model.channel_base, cfg.model.channel_max) for i in range(2, 11)]
    assert maps == [512, 512, 512, 512, 256, 128, 64, 32, 16]


@pytest.mark.skipif(
    not (PRESETS_DIR / "digits.yaml").is_file(), reason="needs the lead's digits preset"
)
def test_progan_digits_preset_loads_and_grows_to_the_data_resolution():
    from pipeline.config import load_config
    from training.networks import build_networks

    cfg = load_config("progan-digits")
    assert (
        cfg.model.family == "progan" and cfg.augment.mode == "none" and cfg.prep.source == "digits"
    )
    final = cfg.prep.resolution
    end = growth_end_kimg(cfg.growth, final)
    assert end <= cfg.train.total_kimg  # growth completes within the run
    last = growth_phase(int(cfg.train.total_kimg * 1000) - 1, cfg.growth, final)
    assert (last.resolution, last.alpha) == (final, 1.0)
    generator, discriminator, g_kwargs, _ = build_networks(cfg.model, final, cfg.prep.channels, 0)
    z = torch.randn(2, cfg.model.z_dim)
    with torch.no_grad():
        assert discriminator(generator(z)).shape == (2, 1)
