"""The classic families trained by the real trainer: critic steps, clipping, resume, 2 processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import load_config
from tests.conftest import tiny_overrides
from training.checkpoint import latest_checkpoint
from training.trainer import train

CLASSIC = {
    "model.z_dim": 8,
    "model.mlp_hidden": 32,
    "model.channel_base": 64,
    "model.channel_max": 16,
    "data.loader": "deterministic",
    "loss.drift": 0.0,
}
WGAN = {
    "model.family": "wgan",
    "loss.kind": "wgan",
    "loss.clip": 0.01,
    "train.d_steps_per_g": 5,
    "train.optimizer_g.kind": "rmsprop",
    "train.optimizer_d.kind": "rmsprop",
    "train.lr_g": 5e-5,
    "train.lr_d": 5e-5,
}


def _cfg(work: Path, manifest: Path, **extra):
    return load_config("digits", tiny_overrides(work, manifest, **{**CLASSIC, **extra}))


def _final(run_dir: Path) -> tuple[dict, dict, dict]:
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    weights = load_file(str(ckpt / "models.safetensors"))
    state = json.loads((ckpt / "state.json").read_text())
    optim = torch.load(ckpt / "optim.pt", weights_only=True)
    return weights, state, optim


def _first_param_state(saved: dict) -> dict:
    """The optimizer state of the first parameter (the updater may wrap the optimizer's)."""
    return next(iter(saved.get("optimizer", saved)["state"].values()))


def test_wgan_critic_steps_clipping_and_images_seen(tmp_path, digits_shards):
    # batch 8, 5 critic rounds: a step shows D 40 real images; 0.12 kimg = 3 steps
    cfg = _cfg(tmp_path, digits_shards, **WGAN, **{"train.total_kimg": 0.12})
    result = train(cfg)
    assert result.status == "finished" and result.images_seen == 3 * 8 * 5
    weights, state, optim = _final(cfg.run_dir)
    assert state["step"] == 3 and state["images_seen"] == 120
    # five RMSprop updates of the critic per generator update
    d_state = _first_param_state(optim["discriminator"])
    g_state = _first_param_state(optim["generator"])
    assert int(d_state["step"]) == 15 and int(g_state["step"]) == 3
    assert "square_avg" in d_state  # RMSprop, not Adam
    # every critic weight clipped (they start at N(0, 0.02), mostly outside +-0.01)
    critic = {k: v for k, v in weights.items() if k.startswith("discriminator.")}
    assert critic and max(v.abs().max().item() for v in critic.values()) <= 0.01
    assert any(v.abs().max().item() == pytest.approx(0.01) for v in critic.values())
    # ... while the generator is not clipped
    assert (
        max(v.abs().max().item() for k, v in weights.items() if k.startswith("generator.")) > 0.01
    )


def test_weight_clipping_off_leaves_the_critic_alone(tmp_path, digits_shards):
    cfg = _cfg(tmp_path, digits_shards, **{**WGAN, "loss.clip": 0.0, "train.total_kimg": 0.04})
    train(cfg)
    weights, _, _ = _final(cfg.run_dir)
    critic = [v for k, v in weights.items() if k.startswith("discriminator.")]
    assert max(v.abs().max().item() for v in critic) > 0.01


@pytest.mark.parametrize(
    "extra",
    [
        {"model.family": "dcgan", "model.conditional": True, "loss.kind": "bce"},
        {"model.family": "wgan-gp", "loss.kind": "wgan-gp", "train.d_steps_per_g": 2},
        {"model.family": "mlp", "loss.kind": "lsgan"},
    ],
    ids=["dcgan-cond", "wgan-gp", "mlp-lsgan"],
)
def test_exact_resume(tmp_path, digits_shards, extra):
    rounds = extra.get("train.d_steps_per_g", 1)
    total = 0.008 * rounds * 6  # 6 steps
    whole = _cfg(tmp_path / "whole", digits_shards, **extra, **{"train.total_kimg": total})
    train(whole)
    first = _cfg(tmp_path / "split", digits_shards, **extra, **{"train.total_kimg": total / 2})
    train(first)
    second = _cfg(tmp_path / "split", digits_shards, **extra, **{"train.total_kimg": total})
    result = train(second)
    assert result.images_seen == round(total * 1000)
    (w1, s1, o1), (w2, s2, o2) = _final(whole.run_dir), _final(second.run_dir)
    assert s1["step"] == s2["step"] == 6
    assert w1.keys() == w2.keys()
    for key in w1:
        assert torch.equal(w1[key], w2[key]), key
    for name in ("generator", "discriminator"):  # and the optimizers' moments
        a, b = o1[name].get("optimizer", o1[name]), o2[name].get("optimizer", o2[name])
        for i, state in a["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][i][key]))
