"""The classic families' phases, hooks and sampling (and the adversarial phases' InfoGAN code
term), run on a real StepContext (no trainer)."""

from __future__ import annotations

import copy

import pytest
import torch

from data_prep.manifest import load_manifest
from pipeline.config import load_config
from tests.conftest import tiny_overrides
from training import losses
from training.families import get_family
from training.families.classic import Classic, check_config, clip_weights
from training.family import Batch, StepContext
from training.networks.stylegan2 import latent_code


def _cfg(tmp_path, manifest, family, **extra):
    overrides = {
        "model.family": family,
        "model.z_dim": 8,
        "model.mlp_hidden": 32,
        "model.channel_base": 64,
        "model.channel_max": 16,
        # the digits preset's mode seeking off: these tests compare G's adversarial loss alone
        # (test_mode_seeking_joins_the_g_loss_with_its_decaying_weight turns it on)
        "loss.ms_weight": 0.0,
        "model.latent_classes": 0,  # the preset's InfoGAN code (its own test turns it on)
        **extra,
    }
    return load_config("digits", tiny_overrides(tmp_path, manifest, **overrides))


def _family(cfg, manifest_dir) -> Classic:
    torch.manual_seed(0)
    cls = get_family(cfg.model.family)
    return cls(cfg, {"train": load_manifest(str(manifest_dir))}, torch.device("cpu"))


def _ctx(family: Classic, nets, n: int = 6, seed: int = 0, images_seen: int = 0) -> StepContext:
    gen = torch.Generator().manual_seed(seed)
    m = family.manifest
    images = torch.rand(n, m.channels, m.resolution, m.resolution, generator=gen) * 2 - 1
    labels = torch.arange(n) % 10
    torch.manual_seed(seed + 1)
    return StepContext(
        nets=nets,
        eager_nets=nets,
        batch={"train": Batch(images=images, labels=labels)},
        cfg=family.cfg,
        step=0,
        images_seen=images_seen,
        critic_round=0,
        micro_batches=1,
        device=torch.device("cpu"),
        c_dim=family.c_dim,
        augment=lambda x: x,
        report_real_logits=lambda logits: None,
        class_ids=torch.arange(family.c_dim) if family.c_dim else None,
    )


def _nets(family: Classic) -> dict:
    declared = family.build_networks()
    nets = {name: net.module for name, net in declared.items()}
    nets["g_ema"] = copy.deepcopy(nets["generator"]).eval()
    return nets


@pytest.mark.parametrize("family_name", ["mlp", "dcgan", "wgan", "wgan-gp"])
def test_registered_and_phase_order(tmp_path, digits_shards, family_name):
    kind = {"wgan": "wgan", "wgan-gp": "wgan-gp"}.get(family_name, "bce")
    cfg = _cfg(tmp_path, digits_shards, family_name, **{"loss.kind": kind})
    family = _family(cfg, digits_shards)
    assert family.name == family_name and isinstance(family, Classic)
    phases = family.phases()
    # Algorithm 1 of GAN / WGAN: the critic block first, then one G update.
    assert [(p.name, p.trains, p.critic) for p in phases] == [
        ("d_main", "discriminator", True),
        ("g_main", "generator", False),
    ]
    assert (phases[0].after_update is not None) == (family_name == "wgan")
    declared = family.build_networks()
    assert declared["generator"].ema == "g_ema" and declared["discriminator"].ema is None


def test_config_combinations_are_checked(tmp_path, digits_shards):
    with pytest.raises(ValueError, match="loss.kind: model.family wgan trains with loss.kind=wgan"):
        check_config(_cfg(tmp_path, digits_shards, "wgan"))
    with pytest.raises(ValueError, match="loss.kind: wgan-gp needs a critic without BatchNorm"):
        check_config(_cfg(tmp_path, digits_shards, "dcgan", **{"loss.kind": "wgan-gp"}))
    # the classic losses on an MLP or a layer-norm DCGAN critic are fine
    check_config(_cfg(tmp_path, digits_shards, "mlp", **{"loss.kind": "wgan-gp"}))
    check_config(
        _cfg(tmp_path, digits_shards, "dcgan", **{"loss.kind": "wgan-gp", "model.d_norm": "layer"})
    )
    with pytest.raises(ValueError, match="not a classic family"):
        check_config(_cfg(tmp_path, digits_shards, "stylegan2"))


@pytest.mark.parametrize(
    ("kind", "d_loss", "g_loss"),
    [
        ("bce", losses.d_bce_loss, losses.g_bce_loss),
        ("nonsaturating", losses.d_bce_loss, losses.g_bce_loss),
        ("hinge", losses.d_hinge_loss, losses.g_hinge_loss),
        ("lsgan", losses.d_lsgan_loss, losses.g_lsgan_loss),
        ("wgan", losses.d_wgan_loss, losses.g_wgan_loss),
    ],
)
def test_phases_use_the_selected_loss(tmp_path, digits_shards, kind, d_loss, g_loss):
    cfg = _cfg(tmp_path, digits_shards, "mlp", **{"loss.kind": kind})
    family = _family(cfg, digits_shards)
    nets = _nets(family)
    ctx = _ctx(family, nets)
    loss, metrics = family.d_main(ctx)
    # Recompute by hand with the same RNG draws: z first, then the label shuffle.
    torch.manual_seed(1)
    g, d = nets["generator"], nets["discriminator"]
    z = torch.randn(6, 8)
    with torch.no_grad():
        fake = g(z, None)
    expected = d_loss(d(ctx.real.images, None).float(), d(fake, None).float())
    torch.testing.assert_close(loss, expected)
    assert set(metrics) == {"loss/d", "scores/real", "scores/fake"}
    ctx = _ctx(family, nets, seed=5)
    loss, metrics = family.g_main(ctx)
    torch.manual_seed(6)
    expected = g_loss(d(g(torch.randn(6, 8), None), None).float())
    torch.testing.assert_close(loss, expected)
    assert metrics["loss/g"] is loss


def test_saturating_option_reaches_the_g_loss(tmp_path, digits_shards):
    cfg = _cfg(tmp_path, digits_shards, "mlp", **{"loss.g_saturating": True})
    family = _family(cfg, digits_shards)
    nets = _nets(family)
    loss, _ = family.g_main(_ctx(family, nets, seed=5))
    torch.manual_seed(6)
    g, d = nets["generator"], nets["discriminator"]
    fake_logits = d(g(torch.randn(6, 8), None), None)
    torch.testing.assert_close(loss, losses.g_bce_loss(fake_logits, saturating=True))
    assert loss.item() < 0  # log(1 - D) < 0, unlike the non-saturating loss


@pytest.mark.parametrize(("images_seen", "weight"), [(0, 2.0), (250, 1.5), (1000, 0.0)])
def test_mode_seeking_joins_the_g_loss_with_its_decaying_weight(
    tmp_path, digits_shards, images_seen, weight
):
    """loss.ms_weight 2 decaying to 0 at 1 kimg: G's loss is the adversarial loss plus the
    weighted mode-seeking term over the halves of the very batch G generated (from its z)."""
    cfg = _cfg(tmp_path, digits_shards, "mlp", **{"loss.ms_weight": 2.0, "loss.ms_decay_kimg": 1.0})
    family = _family(cfg, digits_shards)
    nets = _nets(family)
    loss, metrics = family.g_main(_ctx(family, nets, seed=5, images_seen=images_seen))
    torch.manual_seed(6)
    g, d = nets["generator"], nets["discriminator"]
    z = torch.randn(6, 8)
    fake = g(z, None)
    adversarial = losses.g_bce_loss(d(fake, None).float())
    torch.testing.assert_close(metrics["loss/g"], adversarial)
    if weight == 0:  # decayed: the plain G loss, no term logged
        assert "loss/mode_seeking" not in metrics
        torch.testing.assert_close(loss, adversarial)
        return
    term = losses.mode_seeking_loss(fake, z)
    torch.testing.assert_close(metrics["loss/mode_seeking"], term)
    torch.testing.assert_close(loss, adversarial + weight * term)
    assert term.item() > 0.1  # the term is not negligible at these sizes (else vacuous)


@pytest.mark.parametrize(("images_seen", "weight"), [(0, 2.0), (500, 1.0), (1000, 0.0)])
def test_infogan_code_loss_joins_both_phases_on_the_same_fakes(
    tmp_path, digits_shards, images_seen, weight
):
    """model.latent_classes 4, loss.info_weight 2 decaying to 0 at 1 kimg: G's and D's losses
    each add the weight x the cross-entropy of D's Q head on the fakes against the codes their
    latents carry; with reused fakes D's phase scores the very fakes (and codes) of G's."""
    overrides = {
        "model.latent_classes": 4,
        "loss.info_weight": 2.0,
        "loss.info_decay_kimg": 1.0,
        "loss.reuse_fakes": True,
    }
    cfg = _cfg(tmp_path, digits_shards, "stylegan2", **overrides)
    family = _family(cfg, digits_shards)
    nets = _nets(family)
    ctx = _ctx(family, nets, n=8, seed=3, images_seen=images_seen)
    g_loss, g_metrics = family.g_main(ctx)
    fake, _, z = family._g_fakes[0]
    q = nets["discriminator"](fake, None)[:, 1:]
    expected = losses.info_loss(q, latent_code(z, 4))
    torch.testing.assert_close(g_metrics["loss/info_g"], expected)
    assert expected.item() > 0.1  # not a vanishing term (else the sums below are vacuous)
    torch.testing.assert_close(g_loss, g_metrics["loss/g"] + weight * expected)
    d_loss, d_metrics = family.d_main(ctx)
    torch.testing.assert_close(d_metrics["loss/info_d"], expected)
    torch.testing.assert_close(d_loss, d_metrics["loss/d"] + weight * expected)
    d_loss.backward()
    head = nets["discriminator"].epilogue.q
    assert head.weight.grad is not None
    assert (head.weight.grad.abs().sum() > 0) == (weight > 0)  # Q learns while the term is on


def test_wgan_gp_adds_the_penalty_with_a_gradient(tmp_path, digits_shards):
    cfg = _cfg(
        tmp_path,
        digits_shards,
        "wgan-gp",
        **{"loss.kind": "wgan-gp", "loss.drift": 0.0, "model.conditional": True},
    )
    family = _family(cfg, digits_shards)
    nets = _nets(family)
    loss, metrics = family.d_main(_ctx(family, nets))
    assert metrics["loss/gp"] > 0
    torch.testing.assert_close(loss, metrics["loss/d"] + metrics["loss/gp"])  # no drift term
    loss.backward()
    assert all(p.grad is not None for p in nets["discriminator"].parameters())


def test_weight_clipping_clamps_every_critic_weight(tmp_path, digits_shards):
    cfg = _cfg(tmp_path, digits_shards, "wgan", **{"loss.kind": "wgan", "loss.clip": 0.01})
    family = _family(cfg, digits_shards)
    nets = _nets(family)
    critic = nets["discriminator"]
    with torch.no_grad():
        for p in critic.parameters():
            p.normal_(0, 0.05)
    before = torch.cat([p.detach().flatten().clone() for p in critic.parameters()])
    assert before.abs().max() > 0.01
    hook = family.phases()[0].after_update
    with torch.no_grad():
        hook(nets)
    after = torch.cat([p.detach().flatten() for p in critic.parameters()])
    assert after.abs().max() <= 0.01
    inside = before.abs() <= 0.01
    torch.testing.assert_close(after[inside], before[inside])  # only the outliers moved
    assert torch.equal(after[~inside], 0.01 * before[~inside].sign())
    # clip_weights is the hook's function
    m = torch.nn.Linear(3, 3)
    clip_weights(m, 0.5)
    assert m.weight.abs().max() <= 0.5


@pytest.mark.parametrize("family_name", ["mlp", "dcgan"])
def test_sample_is_deterministic_and_batch_independent(tmp_path, digits_shards, family_name):
    cfg = _cfg(tmp_path, digits_shards, family_name, **{"model.conditional": True})
    family = _family(cfg, digits_shards)
    nets = _nets(family)
    z = torch.randn(5, 8)
    c = torch.nn.functional.one_hot(torch.arange(5) % 10, 10).float()
    with torch.no_grad():
        batch = family.sample(nets, z, c, images_seen=64)
        single = family.sample(nets, z[:1], c[:1], images_seen=64)
        torch.testing.assert_close(batch[:1], single)
        # another process (another family instance, its own G_ema copy) gets the same images
        other = _family(cfg, digits_shards)
        other_nets = _nets(other)
        torch.testing.assert_close(other.sample(other_nets, z, c, images_seen=64), batch)
    assert batch.shape == (5, 3, 16, 16)
    assert not nets["g_ema"].training


def test_export_recalibrates_and_round_trips(tmp_path, digits_shards):
    from training.networks.export import load_export

    cfg = _cfg(tmp_path, digits_shards, "dcgan")
    family = _family(cfg, digits_shards)
    nets = _nets(family)
    out = family.export(nets, tmp_path / "export", {"kimg": 0.0})
    generator, config = load_export(out)
    assert config["family"] == "dcgan" and config["kwargs"]["arch"] == "dcgan"
    norm = generator.net[1]
    assert norm.num_batches_tracked.item() == 512 // 64  # statistics from the fixed latents
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(generator(z), family.sample(nets, z, None, images_seen=0))
