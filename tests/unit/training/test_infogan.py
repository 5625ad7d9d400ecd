"""InfoGAN's categorical latent code (model.latent_classes): the code read from z, G's use of it,
D's Q head, the loss on hand-computed inputs, the config checks and the export round trip."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import info_loss
from training.networks import ModelConfig, build_networks
from training.networks.export import load_export, save_export
from training.networks.stylegan2 import Discriminator, Generator, latent_code

TINY = dict(z_dim=16, w_dim=16, map_depth=2, channel_base=128, channel_max=16)


def test_latent_code_is_the_argmax_of_the_first_k_values_and_uniform():
    z = torch.tensor([[0.1, 2.0, -1.0, 9.0], [3.0, 0.0, 1.0, -9.0]])
    assert latent_code(z, 3).tolist() == [1, 0]  # z[:, 3] is not part of a 3-way code
    assert latent_code(z, 4).tolist() == [3, 0]
    counts = torch.bincount(latent_code(torch.randn(50_000, 16), 10), minlength=10) / 50_000
    assert (counts - 0.1).abs().max() < 0.01  # uniform for a Gaussian z


def test_generator_embeds_the_code_its_z_carries():
    """Changing the embedding of a code moves exactly the samples whose z carries that code."""
    torch.manual_seed(0)
    generator = Generator(img_resolution=8, latent_classes=4, **TINY)
    assert generator.c_dim == 0  # an unconditional interface: callers pass z only
    z = torch.randn(64, TINY["z_dim"])
    code = latent_code(z, 4)
    assert set(code.tolist()) == {0, 1, 2, 3}
    before = generator.mapping(z, None)
    with torch.no_grad():
        generator.mapping.embed.weight[:, 2] += 1.0  # the embedding of code 2 only
    after = generator.mapping(z, None)
    moved = (after - before).abs().amax(dim=(1, 2)) > 1e-6
    assert torch.equal(moved, code == 2)
    images = generator(z[:4], noise_mode="const")
    assert images.shape == (4, 3, 8, 8) and torch.isfinite(images).all()


def test_q_head_adds_code_logits_beside_an_unchanged_score():
    torch.manual_seed(0)
    kwargs = dict(img_resolution=16, channel_base=128, channel_max=16)
    plain = Discriminator(**kwargs)
    with_q = Discriminator(q_dim=5, **kwargs)
    missing, unexpected = with_q.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["epilogue.q.bias", "epilogue.q.weight"] and not unexpected
    images = torch.randn(6, 3, 16, 16)
    out = with_q(images)
    assert out.shape == (6, 6)
    torch.testing.assert_close(out[:, :1], plain(images))  # the score is D's, untouched
    features = with_q.epilogue.fc(  # Q reads the same features as the score: D's last layer
        with_q.epilogue.conv(with_q.epilogue.mbstd(_blocks(with_q, images))).flatten(1)
    )
    torch.testing.assert_close(out[:, 1:], with_q.epilogue.q(features))


def _blocks(d: Discriminator, images: torch.Tensor) -> torch.Tensor:
    x, img = None, images
    for block in d.blocks.values():
        x, img = block(x, img)
    return x


def test_info_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    code = torch.tensor([0, 2])
    # -log softmax: row 0 at 0: log(e^2 + 2) - 2; row 1 at 2: log(e + 2) - 0
    expected = (math.log(math.e**2 + 2) - 2 + math.log(math.e + 2)) / 2
    loss = info_loss(logits, code)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    # d/dlogits of the mean cross-entropy: (softmax - onehot) / N
    soft = torch.softmax(logits.detach(), dim=1)
    onehot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(logits.grad, (soft - onehot) / 2)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"latent_classes": 1}, "0 \\(off\\) or >= 2"),
        ({"latent_classes": -3}, "0 \\(off\\) or >= 2"),
        ({"latent_classes": 10, "conditional": True}, "unconditional stylegan2"),
        ({"latent_classes": 10, "family": "dcgan"}, "unconditional stylegan2"),
        ({"latent_classes": 10, "z_dim": 8}, "raise model.z_dim"),
    ],
)
def test_config_refuses_what_the_code_cannot_do(fields, match):
    with pytest.raises(ValueError, match=f"latent_classes: .*{match}"):
        ModelConfig(**{**TINY, **fields})


def test_export_round_trip_keeps_the_code(tmp_path):
    generator, discriminator, g_kwargs, d_kwargs = build_networks(
        ModelConfig(latent_classes=4, **TINY), 16, 3, 10
    )
    assert g_kwargs["latent_classes"] == 4 and g_kwargs["c_dim"] == 0 and d_kwargs["q_dim"] == 4
    assert discriminator(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    generator.eval()
    save_export(tmp_path / "export", generator, family="stylegan2", kwargs=g_kwargs)
    loaded, config = load_export(tmp_path / "export")
    assert config["c_dim"] == 0 and config["kwargs"]["latent_classes"] == 4
    z = torch.randn(8, TINY["z_dim"])
    torch.testing.assert_close(
        loaded(z, noise_mode="const"), generator(z, noise_mode="const"), rtol=0, atol=0
    )
