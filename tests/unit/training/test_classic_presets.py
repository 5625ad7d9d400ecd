"""The classic presets load, carry the papers' values and build their networks."""

from __future__ import annotations

import pytest
from torch import nn

from pipeline.config import load_config
from training.families.classic import check_config
from training.networks import build_networks


def _convs(module: nn.Module, kind) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, kind)]


def test_seed_mlp_is_the_tutorial():
    cfg = load_config("seed-mlp")
    check_config(cfg)
    assert (cfg.model.family, cfg.model.z_dim, cfg.model.mlp_hidden, cfg.model.mlp_layers) == (
        "mlp",
        100,
        128,
        1,
    )
    assert (cfg.loss.kind, cfg.loss.g_saturating) == ("bce", False)
    t = cfg.train
    assert (t.batch, t.lr_g, t.lr_d, t.betas, t.d_steps_per_g) == (
        64,
        2e-4,
        2e-4,
        (0.9, 0.999),
        1,
    )
    assert t.optimizer_g.kind == t.optimizer_d.kind == "adam"
    g, d, _, _ = build_networks(cfg.model, cfg.prep.resolution, cfg.prep.channels, 0)
    assert [m.out_features for m in g.net if isinstance(m, nn.Linear)] == [128, 32 * 32]


def test_dcgan_presets():
    cfg = load_config("dcgan")
    check_config(cfg)
    assert (cfg.train.batch, cfg.train.lr_g, cfg.train.betas) == (128, 2e-4, (0.5, 0.999))
    g, d, _, _ = build_networks(cfg.model, 64, 3, 0)
    assert _convs(g, nn.ConvTranspose2d) == [1024, 512, 256, 128, 3]  # the paper's fig. 1
    assert _convs(d, nn.Conv2d) == [128, 256, 512, 1024, 1]
    small = load_config("dcgan-digits")
    check_config(small)
    assert (small.model.family, small.prep.resolution, small.train.betas) == (
        "dcgan",
        32,
        (0.5, 0.999),
    )


def test_wgan_presets():
    wgan = load_config("wgan-digits")
    check_config(wgan)
    t = wgan.train
    assert (wgan.loss.kind, wgan.loss.clip, t.d_steps_per_g, t.batch) == ("wgan", 0.01, 5, 64)
    assert t.optimizer_g.kind == t.optimizer_d.kind == "rmsprop" and t.lr_d == 5e-5
    gp = load_config("wgan-gp-digits")
    check_config(gp)
    t = gp.train
    assert (gp.loss.kind, gp.loss.gp_lambda, gp.loss.drift) == ("wgan-gp", 10.0, 0.0)
    assert (t.d_steps_per_g, t.lr_d, t.betas, t.optimizer_d.kind) == (5, 1e-4, (0.0, 0.9), "adam")
    _, critic, _, d_kwargs = build_networks(gp.model, 32, 1, 0)
    assert d_kwargs["norm"] == "layer"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in critic.modules())


@pytest.mark.parametrize("preset", ["seed-mlp", "dcgan-digits", "wgan-digits", "wgan-gp-digits"])
def test_digit_presets_have_no_ema(preset):
    from training.ema import ema_beta

    cfg = load_config(preset)
    # the papers sample G itself: G_ema is an exact copy after every step
    assert ema_beta(cfg.train.batch, cfg.train.ema_kimg, 10_000, cfg.train.ema_rampup) == 0.0
