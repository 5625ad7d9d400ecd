"""ProGAN generator/discriminator: shapes at every stage, fade-in paths computed by hand through
the submodules, conditioning, truncation, stable parameters across growth, export round-trip."""

from __future__ import annotations

import json

import pytest
import torch

from training.networks import build_networks
from training.networks.config import ModelConfig
from training.networks.export import load_export, save_export
from training.networks.layers import normalize_2nd_moment
from training.networks.progan import (
    Discriminator,
    Generator,
    channels_at,
    discriminator_kwargs,
    generator_kwargs,
)

Z_DIM = 8
TINY = {"channel_base": 64, "channel_max": 8}  # 8 maps at 4/8 px, 4 at 16, 2 at 32, 1 at 64


def make_pair(
    c_dim: int = 0, resolution: int = 32, channels: int = 3, seed: int = 0, mbstd_group: int = 4
):
    torch.manual_seed(seed)
    generator = Generator(
        z_dim=Z_DIM, c_dim=c_dim, img_resolution=resolution, img_channels=channels, **TINY
    )
    discriminator = Discriminator(
        c_dim=c_dim,
        img_resolution=resolution,
        img_channels=channels,
        mbstd_group=mbstd_group,
        **TINY,
    )
    # Nonzero biases so that every path (and truncation) is exercised as after training.
    with torch.no_grad():
        for module in (generator, discriminator):
            for name, p in module.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.1)
    return generator, discriminator


def nearest_up(x: torch.Tensor) -> torch.Tensor:  # independent of F.interpolate
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def box_down(x: torch.Tensor) -> torch.Tensor:  # independent of F.avg_pool2d
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def features_by_hand(generator: Generator, z: torch.Tensor, upto: int) -> dict[int, torch.Tensor]:
    """Block outputs {resolution: features} for 4..upto, straight through the submodules."""
    x = generator.blocks["4"](normalize_2nd_moment(z))
    out = {4: x}
    r = 8
    while r <= upto:
        x = generator.blocks[str(r)](x)
        out[r] = x
        r *= 2
    return out


def d_rest_by_hand(discriminator: Discriminator, x: torch.Tensor, resolution: int) -> torch.Tensor:
    """D from the features entering the blocks below ``resolution`` to the logits."""
    r = resolution // 2
    while r > 4:
        x = discriminator.blocks[str(r)](x)
        r //= 2
    return discriminator.epilogue(x, None)


@pytest.mark.parametrize("c_dim", [0, 3])
def test_shapes_at_every_stage(c_dim):
    generator, discriminator = make_pair(c_dim=c_dim, channels=3)
    z = torch.randn(6, Z_DIM)
    c = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])] if c_dim else None
    for resolution in (4, 8, 16, 32):
        for alpha in (0.0, 0.5, 1.0):
            images = generator(z, c, resolution=resolution, alpha=alpha)
            assert images.shape == (6, 3, resolution, resolution)
            assert torch.isfinite(images).all()
            logits = discriminator(images, c, resolution=resolution, alpha=alpha)
            assert logits.shape == (6, 1) and torch.isfinite(logits).all()
    assert generator(z, c).shape == (6, 3, 32, 32)  # None: full resolution
    assert discriminator(generator(z, c), c).shape == (6, 1)


def test_shapes_at_64px_grayscale():
    generator, discriminator = make_pair(resolution=64, channels=1)
    z = torch.randn(2, Z_DIM)
    for resolution in (4, 8, 16, 32, 64):
        images = generator(z, resolution=resolution, alpha=0.5)
        assert images.shape == (2, 1, resolution, resolution)
        assert discriminator(images, resolution=resolution, alpha=0.5).shape == (2, 1)


def test_channels_follow_model_config_formula():
    assert [channels_at(r, 16384, 512) for r in (4, 32, 64, 1024)] == [512, 512, 256, 16]
    generator = Generator(
        z_dim=Z_DIM, c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=32
    )
    assert (
        generator.blocks["32"].conv1.out_channels == 8
        and generator.blocks["8"].conv1.out_channels == 32
    )


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_generator_fade_paths_by_hand(resolution):
    generator, _ = make_pair()
    z = torch.randn(4, Z_DIM)
    with torch.no_grad():
        feats = features_by_hand(generator, z, resolution)
        new = generator.torgb[str(resolution)](feats[resolution])
        old = nearest_up(generator.torgb[str(resolution // 2)](feats[resolution // 2]))
        assert torch.allclose(generator(z, resolution=resolution, alpha=1.0), new, atol=1e-6)
        assert torch.allclose(generator(z, resolution=resolution, alpha=0.0), old, atol=1e-6)
        assert torch.allclose(
            generator(z, resolution=resolution, alpha=0.25), 0.75 * old + 0.25 * new, atol=1e-6
        )
        # alpha as a 0-dim tensor (no torch.compile recompile per value) gives the same images
        assert torch.allclose(
            generator(z, resolution=resolution, alpha=torch.tensor(0.25)),
            0.75 * old + 0.25 * new,
            atol=1e-6,
        )
        assert not torch.allclose(new, old, atol=1e-3)  # the two paths really differ


def test_generator_at_4px_ignores_alpha():
    generator, _ = make_pair()
    z = torch.randn(3, Z_DIM)
    with torch.no_grad():
        expected = generator.torgb["4"](features_by_hand(generator, z, 4)[4])
        assert torch.allclose(generator(z, resolution=4, alpha=0.0), expected, atol=1e-6)
        assert torch.allclose(generator(z, resolution=4, alpha=1.0), expected, atol=1e-6)


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_discriminator_fade_paths_by_hand(resolution):
    _, discriminator = make_pair()
    images = torch.randn(4, 3, resolution, resolution)
    with torch.no_grad():
        new_in = discriminator.blocks[str(resolution)](
            discriminator.fromrgb[str(resolution)](images)
        )
        old_in = discriminator.fromrgb[str(resolution // 2)](box_down(images))
        new = d_rest_by_hand(discriminator, new_in, resolution)
        old = d_rest_by_hand(discriminator, old_in, resolution)
        blend = d_rest_by_hand(discriminator, 0.4 * old_in + 0.6 * new_in, resolution)
        assert torch.allclose(
            discriminator(images, resolution=resolution, alpha=1.0), new, atol=1e-5
        )
        assert torch.allclose(
            discriminator(images, resolution=resolution, alpha=0.0), old, atol=1e-5
        )
        assert torch.allclose(
            discriminator(images, resolution=resolution, alpha=0.6), blend, atol=1e-5
        )
        assert torch.allclose(
            discriminator(images, resolution=resolution, alpha=torch.tensor(0.6)), blend, atol=1e-5
        )
        assert not torch.allclose(new, old, atol=1e-4)


def test_discriminator_at_4px():
    _, discriminator = make_pair()
    images = torch.randn(4, 3, 4, 4)
    with torch.no_grad():
        expected = discriminator.epilogue(discriminator.fromrgb["4"](images), None)
        assert torch.allclose(discriminator(images, resolution=4, alpha=0.3), expected, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3, 5, 6, 8])
def test_minibatch_stddev_handles_any_batch(batch):
    _, discriminator = make_pair(mbstd_group=4)
    logits = discriminator(torch.randn(batch, 3, 16, 16), resolution=16, alpha=0.5)
    assert logits.shape == (batch, 1) and torch.isfinite(logits).all()


def test_minibatch_stddev_couples_samples_and_can_be_disabled():
    _, discriminator = make_pair(mbstd_group=4)
    images = torch.randn(4, 3, 8, 8)
    changed = images.clone()
    changed[3] = changed[3] * 3
    with torch.no_grad():
        # sample 0's logit depends on the other samples of its group through the stddev feature
        assert not torch.allclose(discriminator(images)[0], discriminator(changed)[0])
        _, no_mbstd = make_pair(mbstd_group=0)
        assert torch.allclose(no_mbstd(images)[0], no_mbstd(changed)[0])


def test_conditioning():
    generator, discriminator = make_pair(c_dim=3)
    z = torch.randn(1, Z_DIM).repeat(3, 1)
    c = torch.eye(3)
    with torch.no_grad():
        images = generator(z, c)
        assert not torch.allclose(images[0], images[1], atol=1e-4)  # same z, different classes
        logits = discriminator(images[:1].repeat(3, 1, 1, 1), c)
        assert not torch.allclose(logits[0], logits[1], atol=1e-5)
        # projection: the logit is sum(x * cmap) / sqrt(cmap_dim), linear in the embedding
        assert generator.embed is not None and discriminator.embed is not None
    with pytest.raises(ValueError, match="conditional"):
        generator(z)
    with pytest.raises(ValueError, match="conditional"):
        discriminator(images)


def test_unconditional_ignores_labels_and_noise_mode():
    generator, _ = make_pair()
    z = torch.randn(2, Z_DIM)
    with torch.no_grad():
        ref = generator(z)
        assert torch.equal(generator(z, torch.eye(2)), ref)
        assert torch.equal(generator(z, None, noise_mode="const"), ref)
        assert torch.equal(generator(z, None, noise_mode="none"), ref)
    with pytest.raises(ValueError, match="noise_mode"):
        generator(z, noise_mode="bogus")


def test_truncation():
    generator, _ = make_pair(c_dim=3)
    z = torch.randn(4, Z_DIM)
    c = torch.eye(3)[[0, 0, 1, 1]]
    with torch.no_grad():
        assert torch.equal(generator(z, c, truncation_psi=1.0), generator(z, c))
        mean = generator(z, c, truncation_psi=0.0)  # one image per class
        assert torch.allclose(mean[0], mean[1]) and torch.allclose(mean[2], mean[3])
        assert not torch.allclose(mean[0], mean[2], atol=1e-4)
        by_hand = generator.torgb["32"](
            features_by_hand_cond(generator, 0.5 * normalize_2nd_moment(z), c)
        )
        assert torch.allclose(generator(z, c, truncation_psi=0.5), by_hand, atol=1e-6)


def features_by_hand_cond(
    generator: Generator, latent: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    x = torch.cat([latent, normalize_2nd_moment(generator.embed(c))], dim=1)
    for r in (4, 8, 16, 32):
        x = generator.blocks[str(r)](x)
    return x


def test_bad_resolution_and_alpha():
    generator, discriminator = make_pair()
    z = torch.randn(2, Z_DIM)
    for resolution in (2, 12, 64):
        with pytest.raises(ValueError, match="resolution"):
            generator(z, resolution=resolution)
    with pytest.raises(ValueError, match="alpha"):
        generator(z, resolution=8, alpha=1.5)
    with pytest.raises(ValueError, match="images"):
        discriminator(torch.randn(2, 3, 16, 16), resolution=8)


def test_parameters_fixed_from_construction_and_only_active_layers_train():
    generator, discriminator = make_pair()
    names_g = [n for n, _ in generator.named_parameters()]
    names_d = [n for n, _ in discriminator.named_parameters()]
    for module in (generator, discriminator):
        assert all(isinstance(v, torch.Tensor) for v in module.state_dict().values())
    assert any(n.startswith("blocks.32.") for n in names_g) and any(
        n.startswith("fromrgb.32.") for n in names_d
    )

    z = torch.randn(4, Z_DIM)
    images = generator(z, resolution=16, alpha=0.5)
    discriminator(images, resolution=16, alpha=0.5).sum().backward()
    grads_g = {n for n, p in generator.named_parameters() if p.grad is not None}
    grads_d = {n for n, p in discriminator.named_parameters() if p.grad is not None}
    assert {"torgb.8.conv.weight", "torgb.16.conv.weight", "blocks.16.conv1.weight"} <= grads_g
    assert not any(n.startswith(("blocks.32.", "torgb.32.", "torgb.4.")) for n in grads_g)
    assert {"fromrgb.8.conv.weight", "fromrgb.16.conv.weight", "blocks.16.conv0.weight"} <= grads_d
    assert not any(n.startswith(("blocks.32.", "fromrgb.32.", "fromrgb.4.")) for n in grads_d)
    # the parameter list does not depend on what ran
    assert [n for n, _ in generator.named_parameters()] == names_g


def test_kwargs_are_json_and_rebuild():
    cfg = ModelConfig(family="progan", z_dim=16, channel_base=128, channel_max=16, mbstd_group=2)
    g_kwargs = generator_kwargs(cfg, 16, 1, 10)
    d_kwargs = discriminator_kwargs(cfg, 16, 1, 10)
    assert (
        json.loads(json.dumps(g_kwargs)) == g_kwargs
        and json.loads(json.dumps(d_kwargs)) == d_kwargs
    )
    assert g_kwargs["c_dim"] == 0 and d_kwargs["c_dim"] == 0  # model.conditional is off
    assert d_kwargs["mbstd_group"] == 2
    cond = ModelConfig(
        family="progan", z_dim=16, channel_base=128, channel_max=16, conditional=True
    )
    assert generator_kwargs(cond, 16, 1, 10)["c_dim"] == 10
    generator, discriminator, gk, dk = build_networks(cond, 16, 1, 10)
    assert isinstance(generator, Generator) and isinstance(discriminator, Discriminator)
    assert (generator.z_dim, generator.c_dim, generator.img_resolution, generator.img_channels) == (
        16,
        10,
        16,
        1,
    )
    assert gk == generator_kwargs(cond, 16, 1, 10) and dk == discriminator_kwargs(cond, 16, 1, 10)


@pytest.mark.parametrize("c_dim", [0, 3])
def test_export_round_trip(tmp_path, c_dim):
    cfg = ModelConfig(family="progan", z_dim=Z_DIM, conditional=c_dim > 0, **TINY)
    kwargs = generator_kwargs(cfg, 32, 3, c_dim)
    torch.manual_seed(1)
    generator = Generator(**kwargs)
    save_export(
        tmp_path / "export",
        generator,
        family="progan",
        kwargs=kwargs,
        class_names=[str(i) for i in range(c_dim)],
    )
    loaded, config = load_export(tmp_path / "export")
    assert config["family"] == "progan" and config["resolution"] == 32 and config["c_dim"] == c_dim
    z = torch.randn(3, Z_DIM)
    c = torch.eye(3) if c_dim else None
    with torch.no_grad():
        assert torch.equal(loaded(z, c), generator(z, c))
        assert torch.equal(loaded(z, c, truncation_psi=0.7), generator(z, c, truncation_psi=0.7))


def test_compiles_without_graph_breaks():
    generator, discriminator = make_pair(resolution=8)
    compiled_g = torch.compile(generator, backend="eager", fullgraph=True)
    compiled_d = torch.compile(discriminator, backend="eager", fullgraph=True)
    z = torch.randn(4, Z_DIM)
    alpha = torch.tensor(0.3)
    with torch.no_grad():
        images = compiled_g(z, resolution=8, alpha=alpha)
        assert torch.allclose(images, generator(z, resolution=8, alpha=0.3), atol=1e-6)
        assert torch.allclose(
            compiled_d(images, resolution=8, alpha=alpha),
            discriminator(images, resolution=8, alpha=0.3),
            atol=1e-6,
        )
