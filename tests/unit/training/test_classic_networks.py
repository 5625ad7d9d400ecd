"""The classic networks (MLP GAN, DCGAN, WGAN / WGAN-GP critics): shapes, structure, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.networks import FAMILIES, build_networks
from training.networks.classic import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    recalibrate_batchnorm,
)
from training.networks.config import ModelConfig
from training.networks.export import load_export, save_export

CLASSIC = ("mlp", "dcgan", "wgan", "wgan-gp")


def _cfg(family: str, conditional: bool = False, **kw) -> ModelConfig:
    base = {"z_dim": 8, "channel_base": 128, "channel_max": 16, "mlp_hidden": 32}
    base.update(kw)
    return ModelConfig(family=family, conditional=conditional, **base)


def _one_hot(n: int, c_dim: int) -> torch.Tensor:
    return nn.functional.one_hot(torch.arange(n) % c_dim, c_dim).float()


@pytest.mark.parametrize("family", CLASSIC)
@pytest.mark.parametrize("resolution", [16, 32, 64, 128])
@pytest.mark.parametrize("conditional", [False, True])
def test_shapes_at_every_resolution(family, resolution, conditional):
    torch.manual_seed(0)
    c_dim = 10 if conditional else 0
    g, d, g_kwargs, d_kwargs = build_networks(_cfg(family, conditional), resolution, 3, 10)
    assert g.c_dim == d.c_dim == c_dim
    z = torch.randn(4, 8)
    c = _one_hot(4, 10) if conditional else None
    images = g(z, c)
    assert images.shape == (4, 3, resolution, resolution)
    assert images.abs().max() <= 1.0  # Tanh out
    logits = d(images, c)
    assert logits.shape == (4, 1)
    assert FAMILIES[family] == "training.networks.classic"
    assert g_kwargs["arch"] == d_kwargs["arch"] == ("mlp" if family == "mlp" else "dcgan")


def test_mlp_is_the_tutorials_network():
    g = MLPGenerator(z_dim=100, c_dim=0, img_resolution=28, img_channels=1)
    d = MLPDiscriminator(c_dim=0, img_resolution=28, img_channels=1)
    assert [type(m) for m in g.net] == [nn.Linear, nn.ReLU, nn.Linear, nn.Tanh]
    assert (g.net[0].in_features, g.net[0].out_features) == (100, 128)
    assert (g.net[2].in_features, g.net[2].out_features) == (128, 784)
    assert [type(m) for m in d.features] == [nn.Linear, nn.ReLU]
    assert (d.features[0].in_features, d.features[0].out_features) == (784, 128)
    assert (d.out.in_features, d.out.out_features) == (128, 1)
    # D returns logits (no sigmoid): unbounded values are possible.
    with torch.no_grad():
        d.out.bias.fill_(5.0)
    assert d(torch.zeros(2, 1, 28, 28)).min() > 1.0
    # width and depth are configurable
    deep = MLPGenerator(z_dim=4, c_dim=0, img_resolution=8, img_channels=1, hidden=16, layers=3)
    assert sum(isinstance(m, nn.Linear) for m in deep.net) == 4


def test_dcgan_structure_and_init():
    torch.manual_seed(0)
    # Radford et al. at 64x64: ngf = ndf = 64 -> 512, 256, 128, 64 maps at 4, 8, 16, 32.
    g = DCGANGenerator(z_dim=100, c_dim=0, img_resolution=64, img_channels=3)
    convs = [m for m in g.net if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in convs] == [512, 256, 128, 64, 3]
    assert all(m.kernel_size == (4, 4) for m in convs)
    assert [m.stride for m in convs] == [(1, 1)] + [(2, 2)] * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.net) == 4  # none on the output
    assert isinstance(g.net[-1], nn.Tanh)
    d = DCGANDiscriminator(c_dim=0, img_resolution=64, img_channels=3)
    dconvs = [m for m in d.features if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in dconvs] == [64, 128, 256, 512]
    # BatchNorm on every conv layer but the first; LeakyReLU 0.2
    assert not isinstance(d.features[1], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.features) == 3
    assert all(m.negative_slope == 0.2 for m in d.features if isinstance(m, nn.LeakyReLU))
    weights = torch.cat([m.weight.flatten() for m in convs + dconvs])
    assert weights.mean().abs() < 1e-3 and abs(weights.std().item() - 0.02) < 1e-3
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01 and abs(bn.std().item() - 0.02) < 0.005


@pytest.mark.parametrize("resolution", [8, 24, 48])
def test_dcgan_rejects_unsupported_resolutions(resolution):
    with pytest.raises(ValueError, match="img_resolution: .*power of two >= 16"):
        DCGANGenerator(z_dim=8, c_dim=0, img_resolution=resolution, img_channels=1)
    with pytest.raises(ValueError, match="img_resolution"):
        DCGANDiscriminator(c_dim=0, img_resolution=resolution, img_channels=1)


def test_wgan_gp_critic_has_no_batchnorm_and_scores_each_sample_alone():
    torch.manual_seed(0)
    _, critic, _, d_kwargs = build_networks(_cfg("wgan-gp"), 32, 1, 0)
    assert d_kwargs["norm"] == "layer"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in critic.modules())
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in critic.modules())
    images = torch.randn(6, 1, 32, 32)
    together = critic(images)
    alone = torch.cat([critic(images[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone)  # the per-sample penalty is well defined
    # ... whereas the DCGAN / WGAN critic's BatchNorm couples the samples of a batch.
    _, bn_critic, _, bn_kwargs = build_networks(_cfg("wgan"), 32, 1, 0)
    assert bn_kwargs["norm"] == "batch"
    coupled = torch.cat([bn_critic(images[:3]), bn_critic(images[3:])])
    assert not torch.allclose(bn_critic(images), coupled)


def test_d_norm_override_and_validation():
    _, d, _, kwargs = build_networks(_cfg("wgan-gp", d_norm="none"), 16, 1, 0)
    assert kwargs["norm"] == "none"
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in d.modules())
    assert all(m.bias is not None for m in d.features[2:] if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="model.d_norm: batch is not valid for wgan-gp"):
        build_networks(_cfg("wgan-gp", d_norm="batch"), 16, 1, 0)
    with pytest.raises(ValueError, match="model.d_norm: the mlp family"):
        build_networks(_cfg("mlp", d_norm="layer"), 16, 1, 0)


@pytest.mark.parametrize("family", ["mlp", "dcgan"])
def test_conditioning_changes_outputs_and_is_required(family):
    torch.manual_seed(0)
    g, d, _, _ = build_networks(_cfg(family, conditional=True), 16, 1, 3)
    z = torch.randn(1, 8).repeat(3, 1)
    c = _one_hot(3, 3)
    g.eval()
    images = g(z, c)
    assert not torch.allclose(images[0], images[1])  # same z, different labels
    same = images[:1].repeat(3, 1, 1, 1)
    logits = d(same, c)
    assert not torch.allclose(logits[0], logits[1])  # projection: the label moves the logit
    with pytest.raises(ValueError, match="c: the generator is conditional"):
        g(z)
    with pytest.raises(ValueError, match="c: the discriminator is conditional"):
        d(same)


def test_truncation_scales_the_latent_and_bad_noise_mode_is_refused():
    torch.manual_seed(0)
    g, _, _, _ = build_networks(_cfg("mlp"), 16, 1, 0)
    z = torch.randn(2, 8)
    torch.testing.assert_close(g(z, truncation_psi=0.5), g(0.5 * z))
    torch.testing.assert_close(g(z, truncation_psi=0.0), g(torch.zeros_like(z)))
    with pytest.raises(ValueError, match="noise_mode"):
        g(z, noise_mode="loud")


def test_training_forwards_keep_no_rank_dependent_statistics():
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=8, c_dim=0, img_resolution=16, img_channels=1, channel_base=64)
    d = DCGANDiscriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=64)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    images = g(torch.randn(5, 8) * 3)  # train mode: micro-batch statistics ...
    d(images)
    for k, v in g.state_dict().items():  # ... and the buffers untouched (no momentum update,
        assert torch.equal(v, before[k]), k  # no num_batches_tracked count per forward)
    assert not list(d.buffers())  # D's BatchNorm always uses its batch: nothing to sync
    # The train-mode output is normalised by the micro-batch's own statistics.
    with torch.no_grad():
        pre = g.net[0](torch.ones(4, 8, 1, 1))
        norm = g.net[1]
        expected = F.batch_norm(pre, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)
        torch.testing.assert_close(norm(pre), expected)


def test_recalibrate_batchnorm_is_exact_and_history_free():
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=8, c_dim=0, img_resolution=16, img_channels=1, channel_base=64)
    z = torch.randn(12, 8)
    g.eval()
    recalibrate_batchnorm(g, torch.randn(9, 8) * 3, batch=3)  # some earlier calibration ...
    recalibrate_batchnorm(g, z, batch=4)
    assert not g.training
    first = g.net[1]
    # ... is gone: the running mean is the exact average of the three batches' means.
    with torch.no_grad():
        pre = g.net[0](z[:, :, None, None])
    batch_means = torch.stack([pre[i : i + 4].mean(dim=(0, 2, 3)) for i in (0, 4, 8)])
    torch.testing.assert_close(first.running_mean, batch_means.mean(0))
    assert first.momentum == 0.1 and not first.recalibrating  # restored
    # In eval mode a sample does not depend on the rest of its batch.
    out = g(z)
    torch.testing.assert_close(out[:1], g(z[:1]))
    # Same weights + same latents -> same statistics, whatever came before.
    state = {k: v.clone() for k, v in g.state_dict().items()}
    g.train()
    g(torch.randn(7, 8))
    recalibrate_batchnorm(g, torch.randn(8, 8))
    recalibrate_batchnorm(g, z, batch=4)
    for k, v in g.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)
    assert g.training  # mode restored


@pytest.mark.parametrize("family", CLASSIC)
@pytest.mark.parametrize("conditional", [False, True])
def test_export_round_trip(tmp_path, family, conditional):
    torch.manual_seed(1)
    g, _, g_kwargs, _ = build_networks(_cfg(family, conditional), 16, 3, 4)
    recalibrate_batchnorm(g, torch.randn(16, 8), _one_hot(16, 4) if conditional else None)
    g.eval()
    save_export(tmp_path, g, family=family, kwargs=g_kwargs)
    loaded, config = load_export(tmp_path)
    assert config["family"] == family and config["kwargs"] == g_kwargs
    z = torch.randn(3, 8)
    c = _one_hot(3, 4) if conditional else None
    torch.testing.assert_close(loaded(z, c), g(z, c))
