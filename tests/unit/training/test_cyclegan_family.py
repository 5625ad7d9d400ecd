"""The cyclegan family: losses on hand-computed inputs, phases, pools in family state, schedule,
grid and the translator export (on real shards of the built-in demo domains)."""

from __future__ import annotations

import pytest
import torch

from data_prep.manifest import load_manifest
from pipeline.config import load_config
from tests.conftest import prep_demo_domains
from training.families import get_family
from training.families.cyclegan import cycle_loss, identity_loss
from training.family import Batch, ReduceContext, StepContext
from training.networks.export import export_kind, load_translator_export
from training.optim import lr_factor


@pytest.fixture(scope="module")
def demo_domains(tmp_path_factory):
    return prep_demo_domains(tmp_path_factory.mktemp("cyclegan-demo"), shard_samples=32)


def _config(tmp_path, domains, *extra):
    return load_config(
        "cyclegan-demo",
        [
            f"work_dir={tmp_path}",
            f"cyclegan.domains=[{domains[0]}, {domains[1]}]",
            "cyclegan.networks.ngf=4",
            "cyclegan.networks.ndf=4",
            "cyclegan.networks.n_blocks=1",
            "cyclegan.pool_size=3",
            "train.batch=2",
            "train.total_kimg=1",
            "train.optimizer_g.lr=0.0002",  # the paper's (the demo preset uses 5x)
            "train.optimizer_d.lr=0.0002",
            *extra,
        ],
    )


def _family(tmp_path, domains, *extra):
    cfg = _config(tmp_path, domains, *extra)
    cls = get_family("cyclegan")
    manifests = {k: load_manifest(v) for k, v in cls.streams(cfg).items()}
    torch.manual_seed(0)
    family = cls(cfg, manifests, torch.device("cpu"))
    nets = {name: net.module for name, net in family.build_networks().items()}
    return family, nets


def _ctx(family, nets, a, b, micro_batches=1):
    return StepContext(
        nets=nets,
        eager_nets=nets,
        batch={"a": Batch(a, torch.full((len(a),), -1)), "b": Batch(b, torch.full((len(b),), -1))},
        cfg=family.cfg,
        step=0,
        images_seen=0,
        critic_round=0,
        micro_batches=micro_batches,
        device=torch.device("cpu"),
        c_dim=0,
        augment=lambda x: x,
        report_real_logits=lambda _: None,
        class_ids=None,
    )


def _reduce(nets):
    return ReduceContext(
        nets=nets,
        step=0,
        images_seen=0,
        device=torch.device("cpu"),
        all_sum=lambda t: t,
        world_size=1,
    )


def test_losses_on_hand_computed_inputs():
    real = torch.tensor([[[[0.0, 1.0], [0.5, -1.0]]]])
    rec = torch.tensor([[[[1.0, 1.0], [0.0, -1.0]]]])
    assert cycle_loss(rec, real).item() == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert identity_loss(real, real).item() == 0.0
    assert identity_loss(real + 0.25, real).item() == pytest.approx(0.25)
    # constant, then linear to zero: 1000 images, decay from 500
    assert [lr_factor(n, 1000, 500) for n in (0, 500, 750, 1000, 1200)] == [1, 1, 0.5, 0, 0]


def test_streams_networks_and_bad_configs(tmp_path, demo_domains):
    family, nets = _family(tmp_path, demo_domains)
    assert type(family).streams(family.cfg) == {"a": demo_domains[0], "b": demo_domains[1]}
    assert set(nets) == {"generators", "discriminators"}
    specs = family.build_networks()
    assert specs["generators"].optimizer.betas == (0.5, 0.999)
    assert specs["generators"].optimizer.lr == pytest.approx(2e-4)
    with pytest.raises(ValueError, match="augment.mode"):
        _family(tmp_path, demo_domains, "augment.mode=ada")
    with pytest.raises(ValueError, match="d_steps_per_g"):
        _family(tmp_path, demo_domains, "train.d_steps_per_g=2")
    ema_family, ema_nets = _family(tmp_path, demo_domains, "cyclegan.ema=true")
    assert ema_family.build_networks()["generators"].ema == "generators_ema"


def test_g_phase_combines_adversarial_cycle_and_identity_losses(tmp_path, demo_domains):
    family, nets = _family(tmp_path, demo_domains)
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    loss, metrics = family.g_loss(_ctx(family, nets, a, b))
    expected = metrics["loss/g"] + 10 * metrics["loss/cycle"] + 5 * metrics["loss/identity"]
    torch.testing.assert_close(loss, expected)
    loss.backward()
    g = nets["generators"]
    assert all(p.grad is not None for p in g.a2b.parameters())
    assert all(p.grad is not None for p in g.b2a.parameters())
    # without the identity term
    family2, nets2 = _family(tmp_path, demo_domains, "cyclegan.lambda_identity=0")
    _, metrics2 = family2.g_loss(_ctx(family2, nets2, a, b))
    assert "loss/identity" not in metrics2


def test_d_phase_uses_this_steps_fakes_and_fills_the_pools(tmp_path, demo_domains):
    family, nets = _family(tmp_path, demo_domains)
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    family.g_loss(_ctx(family, nets, a, b))
    fake_b = family._fakes[0]["b"].clone()
    loss, metrics = family.d_loss(_ctx(family, nets, a, b))
    with torch.no_grad():
        d_b = nets["discriminators"].b
        expected_b = 0.5 * ((d_b(b) - 1) ** 2).mean() + 0.5 * (d_b(fake_b) ** 2).mean()
    torch.testing.assert_close(metrics["loss/d_b"], expected_b)
    torch.testing.assert_close(loss, metrics["loss/d_a"] + metrics["loss/d_b"])
    family.end_step(_reduce(nets))
    assert family.pools["b"].count == 2 and family.pools["a"].count == 2
    torch.testing.assert_close(family.pools["b"].images[:2], fake_b)
    # the pool state is checkpointed as tensors and restored exactly
    state = family.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    other, _ = _family(tmp_path, demo_domains)
    other.load_state_dict({k: v.reshape(-1) for k, v in state.items()})  # as checkpoints
    assert other.pools["b"].count == 2
    torch.testing.assert_close(other.pools["b"].images, family.pools["b"].images)


def test_schedule_decays_linearly_in_the_second_half(tmp_path, demo_domains):
    family, _ = _family(tmp_path, demo_domains)
    lr = [family.schedule(n).lr["generators"] for n in (0, 500, 750, 1000)]
    assert lr == pytest.approx([2e-4, 2e-4, 1e-4, 0.0])
    family, _ = _family(tmp_path, demo_domains, "cyclegan.decay_start_kimg=0.8")
    assert family.schedule(900).lr["discriminators"] == pytest.approx(1e-4)


def test_grid_and_translator_export_round_trip(tmp_path, demo_domains):
    family, nets = _family(tmp_path, demo_domains)
    grid = family.grid(nets, 0, 36)
    assert grid.shape == (36, 3, 32, 32)
    # column 0 of each row is a real A image, column 3 a real B image
    real_a, real_b = family._reals(6)
    torch.testing.assert_close(grid[0::6], real_a)
    torch.testing.assert_close(grid[3::6], real_b)
    out = family.export(nets, tmp_path / "export", {"kimg": 0.1})
    assert export_kind(out) == "translator"
    generators, config = load_translator_export(out)
    assert config["kind"] == "translator" and config["directions"] == ["a2b", "b2a"]
    assert config["resolution"] == 32 and config["channels"] == 3
    assert config["domains"]["A"]["dataset_sha256"] == family.manifests["a"].sha256
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(generators["a2b"](x), nets["generators"].a2b(x))
        torch.testing.assert_close(generators["b2a"](x), nets["generators"].b2a(x))


def _grade(x: torch.Tensor) -> torch.Tensor:
    """The demo's colour grade on [-1, 1] tensors (what a perfect A -> B translator does)."""
    return (((x + 1) / 2)[:, [1, 2, 0]].clamp(0, 1) ** 0.6) * 2 - 1


def _ungrade(x: torch.Tensor) -> torch.Tensor:
    return ((((x + 1) / 2).clamp(0, 1) ** (1 / 0.6))[:, [2, 0, 1]]) * 2 - 1


def test_translation_metrics_tell_a_good_translator_from_none(demo_domains):
    from training.metrics import EvalConfig
    from training.metrics.translation import translation_metrics

    manifests = [load_manifest(p) for p in demo_domains]
    cfg = EvalConfig(metrics=["fid"], feature_extractor="classifier", num_images=96, num_workers=0)
    perfect = translation_metrics(_grade, _ungrade, *manifests, cfg)
    identity = translation_metrics(lambda x: x, lambda x: x, *manifests, cfg)
    noise = translation_metrics(torch.randn_like, torch.randn_like, *manifests, cfg)
    assert perfect["style_fd_ab"] == pytest.approx(identity["style_fd_a2b"], rel=1e-4)
    assert perfect["style_fd_a2b"] < identity["style_fd_a2b"] / 4
    assert perfect["style_fd_b2a"] < identity["style_fd_b2a"] / 4
    assert noise["style_fd_a2b"] > perfect["style_fd_a2b"] * 4
    assert perfect["domain_b_share_a2b"] > identity["domain_b_share_a2b"] + 0.4
    assert perfect["cycle_distance"] < 0.01 and identity["cycle_distance"] == 0.0
    assert noise["cycle_distance"] > 0.2
