"""The trainer on real shards, in-process: a short run, exact resume, divergence handling."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.config import load_config
from tests.conftest import tiny_overrides
from training.checkpoint import latest_checkpoint, load_checkpoint
from training.networks.export import load_export
from training.trainer import train


def _cfg(tmp_path, manifest, **extra):
    return load_config("digits", tiny_overrides(tmp_path, manifest, **extra))


def _weights(run_dir):
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    from safetensors.torch import load_file

    return load_file(str(ckpt / "models.safetensors")), json.loads((ckpt / "state.json").read_text())


def test_short_run_writes_everything(tmp_path, digits_shards):
    cfg = _cfg(tmp_path, digits_shards, **{"eval.at_end": True, "eval.num_images": 50})
    result = train(cfg)
    assert result.status == "finished" and result.images_seen == 32
    run = cfg.run_dir
    assert (run / "config.yaml").is_file() and (run / "samples" / "latest.png").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ticks = [r for r in rows if "loss/g" in r]
    assert len(ticks) == 2 and {"loss/d", "timing/sec_per_kimg", "augment/p"} <= set(ticks[-1])
    assert 0 <= rows[-1]["metrics/coverage"] <= 1  # the final evaluation (digits preset: coverage)
    generator, config = load_export(result.export_dir)
    assert config["family"] == "stylegan2" and config["meta"]["kimg"] == pytest.approx(0.032)
    assert set(config["meta"]["metrics"]) == {"coverage", "class_entropy", "classifier_fd"}
    assert generator(torch.randn(2, generator.z_dim), None, noise_mode="const").shape == (2, 3, 16, 16)


def test_resume_is_exact(tmp_path, digits_shards):
    extra = {"data.loader": "deterministic", "augment.mode": "ada", "augment.interval": 1,
             "augment.ada_kimg": 0.1, "loss.r1_interval": 2, "train.checkpoint_ticks": 0}
    straight = _cfg(tmp_path / "a", digits_shards, **extra, **{"train.total_kimg": 0.048})
    train(straight)
    half = _cfg(tmp_path / "b", digits_shards, **extra, **{"train.total_kimg": 0.024})
    train(half)
    resumed = _cfg(tmp_path / "b", digits_shards, **extra, **{"train.total_kimg": 0.048})
    train(resumed)
    (wa, sa), (wb, sb) = _weights(straight.run_dir), _weights(resumed.run_dir)
    assert sa["images_seen"] == sb["images_seen"] == 48
    assert sa["augment_p"] == pytest.approx(sb["augment_p"]) and sa["augment_p"] > 0
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, digits_shards):
    cfg = _cfg(tmp_path, digits_shards, **{"train.lr_d": 1e30, "train.lr_g": 1e30, "train.total_kimg": 0.4})
    result = train(cfg)
    assert result.status == "diverged"
    assert result.export_dir is None
    ckpt = latest_checkpoint(cfg.run_dir / "checkpoints")
    if ckpt is not None:  # any checkpoint left behind holds finite weights
        state, _ = load_checkpoint(ckpt, modules={})
        assert state["images_seen"] < result.images_seen


def test_conditional_needs_labels_message(tmp_path, digits_shards):
    cfg = _cfg(tmp_path, digits_shards, **{"model.conditional": True})
    result = train(cfg)  # digits are labelled: conditional works
    assert result.status == "finished"
    _, config = load_export(result.export_dir)
    assert config["c_dim"] == 10 and config["class_names"][:3] == ["0", "1", "2"]
