"""The family interface under the real trainer: labels D sees, lazy-regularisation Adam
correction, non-finite policy, critic steps, hooks, no host sync inside a tick, compile."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import load_config
from tests.conftest import tiny_overrides
from tests.unit.training.host_sync import HostSyncCounter
from training import families
from training.checkpoint import latest_checkpoint
from training.distributed import Distributed, Updater
from training.families.stylegan2 import StyleGAN2
from training.networks.layers import split_batches
from training.optim import lazy_ratio
from training.trainer import Trainer, train


def _cfg(tmp_path, manifest, **extra):
    return load_config("digits", tiny_overrides(tmp_path, manifest, **extra))


@pytest.fixture
def make_trainer():
    made = []

    def make(cfg):
        trainer = Trainer(cfg)
        made.append(trainer)
        trainer.resume()
        return trainer

    yield make
    for trainer in made:
        trainer.dist.shutdown()


# ---------------------------------------------------------------------------------------------
# D scores every fake with the labels G generated it from (NVlabs loss.py, "Dgen")


class Recorder:
    """Every generator call (labels in, images out) and every D call (images, labels)."""

    def __init__(self, trainer):
        self.events: list[tuple] = []
        g, d = trainer.nets["generator"], trainer.nets["discriminator"]
        if hasattr(g, "mapping"):  # StyleGAN2: phases call mapping and synthesis
            g.mapping.register_forward_hook(self._mapping)
            g.synthesis.register_forward_hook(self._synthesis)
        else:
            g.register_forward_hook(self._generator)
        d.register_forward_pre_hook(self._discriminator)
        self._last_c = None

    def _mapping(self, module, args, out):
        self._last_c = args[1]

    def _synthesis(self, module, args, out):
        self.events.append(("G", self._last_c.detach().clone(), out.detach().float().clone()))

    def _generator(self, module, args, out):
        self.events.append(("G", args[1].detach().clone(), out.detach().float().clone()))

    def _discriminator(self, module, args):
        self.events.append(("D", args[0].detach().float().clone(), args[1].detach().clone()))


def _d_batches(events, group):
    """Every batch D scored: a joined real+fake forward (``join_batches``) as its two halves."""
    out = []
    for _, images, c in (e for e in events if e[0] == "D"):
        out.append((images, c))
        if group and images.shape[0] % 2 == 0:
            halves = zip(split_batches(images, group), split_batches(c, group))
            out += [(img, lab) for img, lab in halves]
    return out


def _labels_of_fakes(events, group=4):
    """-> [(labels D got, labels G used)] for every D batch that is a batch of generated images."""
    fakes = [(e[1], e[2]) for e in events if e[0] == "G"]
    pairs = []
    for images, c in _d_batches(events, group):
        for g_c, g_img in fakes:
            if g_img.shape == images.shape and torch.equal(g_img, images):
                pairs.append((c, g_c))
    return pairs


@pytest.mark.parametrize(
    "extra",
    [
        {"loss.r1_interval": 2, "loss.pl_weight": 1.0, "loss.pl_interval": 2},  # lazy R1 + PL
        {"loss.r1_interval": 1},  # R1 inside the D main phase
        {"loss.kind": "wgan-gp"},  # WGAN-GP: interpolates
        {
            "model.family": "progan",
            "loss.kind": "wgan-gp",
            "growth.start_resolution": 16,
            "model.channel_base": 64,
        },
    ],
    ids=["stylegan2-lazy", "stylegan2-r1-main", "stylegan2-wgan-gp", "progan"],
)
def test_d_scores_fakes_with_the_labels_they_were_generated_from(
    tmp_path, digits_shards, make_trainer, extra
):
    cfg = _cfg(
        tmp_path,
        digits_shards,
        **{"model.conditional": True, "augment.mode": "none", "train.batch": 16, **extra},
    )
    trainer = make_trainer(cfg)
    recorder = Recorder(trainer)
    trainer.train_step(*trainer.next_batches())  # step 0: every lazy phase is due
    pairs = _labels_of_fakes(recorder.events)
    # g_main and d_main each score one batch of fakes (R1 and PL phases score none)
    assert len(pairs) >= 2
    for d_labels, g_labels in pairs:
        assert torch.equal(d_labels, g_labels)
    d_calls = [e for e in recorder.events if e[0] == "D"]
    if cfg.loss.kind == "wgan-gp":  # reals + fakes (one forward), interpolates: one label per row
        joined_c, mixed_c = (e[2] for e in d_calls[-2:])
        real_c, fake_c = split_batches(joined_c, cfg.model.mbstd_group)
        assert torch.equal(fake_c, real_c) and torch.equal(mixed_c, real_c)
    for _, _, c in d_calls:  # labels actually vary (the test would be vacuous otherwise)
        assert c.argmax(1).unique().numel() > 1


@pytest.mark.parametrize("reuse", [False, True])
def test_reuse_fakes_scores_the_g_phase_fakes_in_the_d_phase(
    tmp_path, digits_shards, make_trainer, reuse
):
    """loss.reuse_fakes: d_main scores the very fakes (and labels) g_main trained G on, with one
    G forward per step instead of two; off, d_main draws a fresh batch."""
    cfg = _cfg(
        tmp_path,
        digits_shards,
        **{
            "model.conditional": True,
            "augment.mode": "none",
            "train.batch": 8,
            "loss.reuse_fakes": reuse,
        },
    )
    trainer = make_trainer(cfg)
    recorder = Recorder(trainer)
    for _ in range(2):  # step 1 too: nothing from step 0 is left over
        recorder.events.clear()
        trainer.train_step(*trainer.next_batches())
        g_calls = [e for e in recorder.events if e[0] == "G"]
        assert len(g_calls) == (1 if reuse else 2)
        pairs = _labels_of_fakes(recorder.events)
        assert len(pairs) == 2  # g_main's D forward and d_main's fake half
        for d_labels, g_labels in pairs:
            assert torch.equal(d_labels, g_labels)


def test_reuse_fakes_refuses_wgan_gp(tmp_path, digits_shards):
    with pytest.raises(ValueError, match="reuse_fakes.*wgan-gp"):
        _cfg(tmp_path, digits_shards, **{"loss.kind": "wgan-gp", "loss.reuse_fakes": True})


@pytest.mark.parametrize("rampdown, factors", [(0.5, [1.0, 1.0, 0.5, 0.0]), (0.0, [1.0] * 4)])
def test_lr_rampdown_falls_linearly_to_zero_over_the_last_kimg(
    tmp_path, digits_shards, make_trainer, rampdown, factors
):
    cfg = _cfg(
        tmp_path, digits_shards, **{"train.total_kimg": 1.0, "train.lr_rampdown_kimg": rampdown}
    )
    trainer = make_trainer(cfg)
    for seen, factor in zip([0, 500, 750, 1000], factors):
        trainer.state.images_seen = seen
        trainer.apply_schedule()
        for name, updater in trainer.updaters.items():
            spec = trainer.specs[name].optimizer
            expected = spec.lr * lazy_ratio(spec) * factor  # lazy-regularisation correction kept
            assert updater.optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Lazy regularisation: the Adam correction for G as NVlabs applies it


def test_generator_adam_correction_whatever_pl_weight(tmp_path, digits_shards, make_trainer):
    # NVlabs training_loop.py: G_reg_interval = 4 and D_reg_interval = 16 build lr * c and
    # betas ** c (c = I / (I + 1)) for every lazily regularised network, pl_weight 0 included
    cfg = _cfg(tmp_path, digits_shards, **{"loss.pl_weight": 0.0, "loss.r1_interval": 16})
    trainer = make_trainer(cfg)
    lr, (b1, b2) = cfg.train.lr_g, cfg.train.betas
    group = trainer.updaters["generator"].param_groups[0]
    assert group["lr"] == pytest.approx(lr * 4 / 5)
    assert group["betas"] == pytest.approx((b1 ** (4 / 5), b2 ** (4 / 5)))
    d_group = trainer.updaters["discriminator"].param_groups[0]
    assert d_group["lr"] == pytest.approx(cfg.train.lr_d * 16 / 17)
    assert [p.name for p in trainer.runner.phases] == ["g_main", "d_main", "d_r1"]


@pytest.mark.parametrize("preset", ["digits", "progan-digits"])
@pytest.mark.parametrize("kind", ["bce", "hinge", "lsgan", "wgan"])
def test_stylegan2_and_progan_refuse_the_classic_loss_kinds(tmp_path, digits_shards, preset, kind):
    # their phases know the logistic (+R1) and WGAN-GP losses only: another kind must not
    # silently train as non-saturating
    cfg = load_config(preset, tiny_overrides(tmp_path, digits_shards, **{"loss.kind": kind}))
    with pytest.raises(ValueError, match=f"loss.kind: .*got '{kind}'"):
        Trainer(cfg)


# ---------------------------------------------------------------------------------------------
# Non-finite policy


def _updater(fused: bool = False):
    dist = Distributed(cpu=True)
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(module.parameters(), lr=0.1, fused=fused or None)
    return dist, module, Updater(dist, module, opt)


def _step(updater, module, loss_scale=1.0):
    updater.begin()
    loss = module(torch.ones(2, 4)).square().mean() * loss_scale
    updater.backward(loss, 1)
    return updater.finish(~torch.isfinite(loss.detach()))


@pytest.mark.parametrize("fused", [False, True])
def test_a_non_finite_loss_skips_the_update_on_the_device(fused):
    dist, module, updater = _updater(fused)
    try:
        assert bool(_step(updater, module))  # a good step changes the weights
        before = [p.detach().clone() for p in module.parameters()]
        state = {k: v.clone() for k, v in updater.optimizer.state[module.weight].items()}
        ok = _step(updater, module, loss_scale=float("nan"))
        assert not bool(ok)
        for p, b in zip(module.parameters(), before):
            assert torch.equal(p, b)
        for key, value in updater.optimizer.state[module.weight].items():
            assert torch.equal(value, state[key]), key
        assert bool(_step(updater, module))
        assert not torch.equal(module.weight, before[0])
    finally:
        dist.shutdown()


def test_non_finite_gradients_are_zeroed_in_one_flat_op():
    dist, module, updater = _updater()
    try:
        module.weight.grad = torch.full_like(module.weight, float("nan"))
        module.bias.grad = torch.tensor([float("inf"), -float("inf"), 2.0])
        updater.finish(torch.zeros([], dtype=torch.bool))
        assert torch.equal(module.weight.grad, torch.zeros_like(module.weight))
        assert module.bias.grad.tolist() == [1e5, -1e5, 2.0]
        assert torch.isfinite(module.weight).all()
    finally:
        dist.shutdown()


class NaNAtSteps(StyleGAN2):
    """StyleGAN2 whose G loss is NaN on the steps listed in ``cfg.name`` (test hook)."""

    name = "stylegan2"

    def g_main(self, ctx):
        loss, metrics = super().g_main(ctx)
        bad_steps = [int(s) for s in self.cfg.name.split("-")[1:]]
        if ctx.step in bad_steps:
            loss = loss * float("nan")
        return loss, metrics


def test_a_transient_bad_step_is_skipped_and_training_goes_on(tmp_path, digits_shards, monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "stylegan2", f"{__name__}:NaNAtSteps")
    cfg = _cfg(tmp_path, digits_shards, **{"name": "nan-1-2", "train.max_bad_steps": 3})
    result = train(cfg)
    assert result.status == "finished" and result.images_seen == 32
    weights = _checkpoint_tensors(result.last_checkpoint)
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_consecutive_bad_steps_stop_and_keep_the_last_good_checkpoint(
    tmp_path, digits_shards, monkeypatch
):
    monkeypatch.setitem(families.FAMILIES, "stylegan2", f"{__name__}:NaNAtSteps")
    bad = "-".join(str(s) for s in range(2, 40))
    cfg = _cfg(
        tmp_path,
        digits_shards,
        **{"name": f"nan-{bad}", "train.max_bad_steps": 3, "train.total_kimg": 0.2},
    )
    result = train(cfg)
    assert result.status == "diverged" and result.export_dir is None
    # ticks of 2 steps, a checkpoint each: tick 0 is good and saved; tick 1 (steps 2-3) ends
    # with a streak of 2 (< 3): not saved; tick 2 (steps 4-5) reaches 3: the run stops
    assert result.images_seen == 48
    assert result.last_checkpoint == latest_checkpoint(cfg.run_dir / "checkpoints")
    state = json.loads((result.last_checkpoint / "state.json").read_text())
    assert state["images_seen"] == 16


def _checkpoint_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "models.safetensors"))


# ---------------------------------------------------------------------------------------------
# Critic steps per G step, optimizer kinds, post-update hooks


def test_critic_steps_per_g_step_are_counted_in_images_seen(tmp_path, digits_shards):
    cfg = _cfg(
        tmp_path,
        digits_shards,
        **{"train.d_steps_per_g": 3, "train.total_kimg": 0.048, "loss.r1_gamma": 0.0},
    )
    result = train(cfg)
    # one step = 3 critic batches of 8 real images: 48 images = 2 steps
    assert result.images_seen == 48
    optim = torch.load(result.last_checkpoint / "optim.pt", weights_only=True)
    g_steps = optim["generator"]["optimizer"]["state"][0]["step"]
    d_steps = optim["discriminator"]["optimizer"]["state"][0]["step"]
    assert float(g_steps) == 2 and float(d_steps) == 6
    state = json.loads((result.last_checkpoint / "state.json").read_text())
    assert state["step"] == 2


class ClippedCritic(StyleGAN2):
    name = "stylegan2"

    def phases(self):
        import dataclasses

        def clip(nets):
            for p in nets["discriminator"].parameters():
                p.clamp_(-0.01, 0.01)

        return [
            dataclasses.replace(p, after_update=clip) if p.trains == "discriminator" else p
            for p in super().phases()
        ]


def test_rmsprop_and_a_post_update_hook(tmp_path, digits_shards, make_trainer, monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "stylegan2", f"{__name__}:ClippedCritic")
    cfg = _cfg(
        tmp_path,
        digits_shards,
        **{"train.optimizer_d.kind": "rmsprop", "train.optimizer_d.lr": 5e-5, "loss.r1_gamma": 0},
    )
    trainer = make_trainer(cfg)
    assert isinstance(trainer.updaters["discriminator"].optimizer, torch.optim.RMSprop)
    assert trainer.updaters["discriminator"].param_groups[0]["lr"] == pytest.approx(5e-5 * 16 / 17)
    trainer.train_step(*trainer.next_batches())
    d = trainer.nets["discriminator"]
    assert max(p.abs().max() for p in d.parameters()) <= 0.01


# ---------------------------------------------------------------------------------------------
# No host synchronisation inside a tick


def test_no_host_sync_inside_the_steps_of_a_tick(tmp_path, digits_shards, make_trainer):
    cfg = _cfg(
        tmp_path,
        digits_shards,
        **{
            "model.conditional": True,
            "augment.mode": "ada",
            "augment.p": 0.5,
            "augment.interval": 2,
            "loss.r1_interval": 2,
            "loss.pl_weight": 1.0,
            "loss.pl_interval": 2,
            "loss.style_mixing": 0.5,
            "train.tick_kimg": 0.024,
        },
    )
    trainer = make_trainer(cfg)
    # warm-up: step 0 builds one-time constants (filters, optimizer state) as any first step
    trainer.train_step(*trainer.next_batches())
    counter = HostSyncCounter()
    for _ in range(3):  # steps 1-3: ADA (p > 0, updated twice), R1, path length, W average, EMA
        images, batches = trainer.next_batches()
        with counter:
            trainer.train_step(images, batches)
    assert counter.calls == []
    metrics, bad_steps, bad_now, stop = trainer.runner.collect(False)  # the tick's one sync
    assert (
        bad_steps == bad_now == 0
        and not stop
        and {"loss/g", "loss/d", "loss/pl", "loss/r1"} <= set(metrics)
    )


# ---------------------------------------------------------------------------------------------
# torch.compile: the same training as eager


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, digits_shards):
    weights = []
    for compiled in (False, True):
        cfg = _cfg(
            tmp_path / str(compiled),
            digits_shards,
            **{
                "train.compile": compiled,
                "train.total_kimg": 0.024,
                "train.tick_kimg": 0.024,
                "loss.r1_interval": 2,
                "loss.pl_weight": 1.0,
                "loss.pl_interval": 2,
                "augment.mode": "none",
                "model.channel_base": 64,
            },
        )
        result = train(cfg)
        weights.append(_checkpoint_tensors(result.last_checkpoint))
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_with_float32_regularisers(tmp_path, digits_shards, precision):
    # the networks cast their high-resolution blocks (set_precision); fp16 adds a loss scale
    # kept on the device, saved with the updater
    cfg = _cfg(
        tmp_path,
        digits_shards,
        **{
            "train.mixed_precision": precision,
            "loss.r1_interval": 2,
            "loss.pl_weight": 1.0,
            "loss.pl_interval": 2,
        },
    )
    result = train(cfg)
    assert result.status == "finished"
    weights = _checkpoint_tensors(result.last_checkpoint)
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
    optim = torch.load(result.last_checkpoint / "optim.pt", weights_only=True)
    scaler = optim["generator"]["scaler"]
    assert (scaler["scale"] > 1) if precision == "fp16" else (scaler["scale"] == 1.0)


def test_reading_a_run_config_does_not_import_the_trainer():
    import subprocess
    import sys

    code = (
        "import sys, pipeline.config as c; c.load_config('digits'); "
        "print(sorted(m for m in ('accelerate', 'training.trainer', 'deepspeed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
