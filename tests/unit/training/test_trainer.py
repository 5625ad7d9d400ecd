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

    return load_file(str(ckpt / "models.safetensors")), json.loads(
        (ckpt / "state.json").read_text()
    )


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
    assert set(config["meta"]["metrics"]) == {
        "coverage",
        "class_entropy",
        "classifier_fd",
        "confident",
        "confident_real",
        "confident_balanced",
    }
    assert generator(torch.randn(2, generator.z_dim), None, noise_mode="const").shape == (
        2,
        3,
        16,
        16,
    )


def test_use_best_makes_the_best_snapshot_the_result(tmp_path, digits_shards):
    """eval.use_best: the run's result (what train registers and run generates from) is
    export-best/, the snapshot with the highest keep_best of all evaluations, with its metrics;
    the final G stays in export/."""
    extra = {
        "train.total_kimg": 0.048,
        "eval.every_kimg": 0.016,
        "eval.num_images": 50,
        "eval.keep_best": "confident_balanced",
        "eval.use_best": True,
    }
    cfg = _cfg(tmp_path, digits_shards, **extra)
    result = train(cfg)
    run = cfg.run_dir
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "metrics/confident_balanced" in r]
    assert len(evals) == 3  # at 16 and 32 images, and the final one at 48
    scores = [r["metrics/confident_balanced"] for r in evals]
    best = evals[scores.index(max(scores))]  # the first of equals: a later tie does not replace
    assert result.export_dir == run / "export-best"
    assert (run / "export" / "generator.json").is_file()  # the final G, kept
    _, config = load_export(result.export_dir)
    assert config["meta"]["kimg"] == pytest.approx(best["kimg"])
    for name, value in config["meta"]["metrics"].items():
        assert result.metrics[f"metrics/{name}"] == pytest.approx(value)
        assert best[f"metrics/{name}"] == pytest.approx(value)


@pytest.mark.parametrize("latent_classes", [0, 20])
def test_resume_is_exact(tmp_path, digits_shards, latent_classes):
    extra = {
        "model.latent_classes": latent_classes,  # 20: the preset's InfoGAN code and Q head
        "data.loader": "deterministic",
        "augment.mode": "ada",
        "augment.p": 0.2,
        "augment.interval": 1,
        "augment.ada_kimg": 0.1,
        "loss.r1_interval": 2,
        "train.checkpoint_ticks": 0,
    }
    straight = _cfg(tmp_path / "a", digits_shards, **extra, **{"train.total_kimg": 0.048})
    train(straight)
    half = _cfg(tmp_path / "b", digits_shards, **extra, **{"train.total_kimg": 0.024})
    train(half)
    resumed = _cfg(tmp_path / "b", digits_shards, **extra, **{"train.total_kimg": 0.048})
    train(resumed)
    (wa, sa), (wb, sb) = _weights(straight.run_dir), _weights(resumed.run_dir)
    assert sa["images_seen"] == sb["images_seen"] == 48
    # the ADA controller owns p and is checkpointed once (state.json "ada")
    # from p 0.2 either way (a p stuck at 0 would hide a controller that forgot its state)
    assert sa["ada"]["p"] == pytest.approx(sb["ada"]["p"]) and sa["ada"]["p"] != 0.2
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)


def test_conditional_needs_labels_message(tmp_path, digits_shards):
    cfg = _cfg(tmp_path, digits_shards, **{"model.conditional": True})
    result = train(cfg)  # digits are labelled: conditional works
    assert result.status == "finished"
    _, config = load_export(result.export_dir)
    assert config["c_dim"] == 10 and config["class_names"][:3] == ["0", "1", "2"]


PROGAN = {
    "model.family": "progan",
    "model.channel_base": 64,
    "model.channel_max": 16,
    "loss.kind": "wgan-gp",
    "augment.mode": "none",
    "growth.start_resolution": 4,
    "growth.fade_kimg": 0.016,
    "growth.stable_kimg": 0.016,
    "growth.batch_per_resolution": "{'4': 16, '8': 8, '16': 8}",
    "data.loader": "deterministic",
    "train.checkpoint_ticks": 0,
}


def test_progan_grows_to_full_resolution(tmp_path, digits_shards):
    # 4 stable (16) -> 8 fade (16) + stable (16) -> 16 fade (16) + stable: 0.096 kimg reaches 16 px
    cfg = _cfg(tmp_path, digits_shards, **PROGAN, **{"train.total_kimg": 0.112})
    result = train(cfg)
    assert result.status == "finished"
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["progress/resolution"] for r in rows][-1] == 16
    assert {r["progress/resolution"] for r in rows} == {4, 8, 16}
    generator, config = load_export(result.export_dir)
    assert config["family"] == "progan"
    assert generator(torch.randn(2, generator.z_dim)).shape == (2, 3, 16, 16)


def test_progan_resume_mid_fade_is_exact(tmp_path, digits_shards):
    # 0.024 kimg = inside the 4 -> 8 fade (alpha 0.5)
    straight = _cfg(tmp_path / "a", digits_shards, **PROGAN, **{"train.total_kimg": 0.04})
    train(straight)
    half = _cfg(tmp_path / "b", digits_shards, **PROGAN, **{"train.total_kimg": 0.024})
    train(half)
    _, state = _weights(half.run_dir)
    assert state["phase"]["resolution"] == 8 and 0 < state["phase"]["alpha"] < 1
    resumed = _cfg(tmp_path / "b", digits_shards, **PROGAN, **{"train.total_kimg": 0.04})
    train(resumed)
    (wa, _), (wb, _) = _weights(straight.run_dir), _weights(resumed.run_dir)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, digits_shards):
    # ProGAN trains normally at 4 px (a checkpoint at 16 images), then the 8 px phase's absurd
    # learning rate blows the weights up: losses go non-finite and the run stops
    cfg = _cfg(
        tmp_path,
        digits_shards,
        **{
            **PROGAN,
            "growth.lr_per_resolution": "{'8': 1.0e+30}",
            "train.total_kimg": 0.4,
            "train.checkpoint_ticks": 1,
            "train.max_bad_steps": 2,
        },
    )
    result = train(cfg)
    assert result.status == "diverged"
    assert result.export_dir is None and result.images_seen < 400
    ckpt = latest_checkpoint(cfg.run_dir / "checkpoints")
    assert ckpt is not None and result.last_checkpoint == ckpt
    state, _ = load_checkpoint(ckpt, modules={})
    assert state["images_seen"] < result.images_seen
    from safetensors.torch import load_file

    weights = load_file(str(ckpt / "models.safetensors"))
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    assert max(w.abs().max() for w in weights.values()) < 1e6  # not the blown-up weights


def test_metrics_jsonl_has_each_tick_once_after_a_resume(tmp_path, digits_shards):
    import shutil

    # ticks at 16, 32, 48 images; checkpoints at ticks 0 and 2 (16 and, at the end, 48)
    extra = {"train.total_kimg": 0.048, "train.checkpoint_ticks": 2}
    cfg = _cfg(tmp_path, digits_shards, **extra)
    train(cfg)
    # a crash after tick 1 was logged: only the checkpoint at 16 images survives
    shutil.rmtree(latest_checkpoint(cfg.run_dir / "checkpoints"))
    assert latest_checkpoint(cfg.run_dir / "checkpoints").name.endswith("16")
    train(_cfg(tmp_path, digits_shards, **extra))
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    ticks = [r for r in rows if "tick" in r]
    assert [round(r["kimg"] * 1000) for r in ticks] == [16, 32, 48]
    assert [r["tick"] for r in ticks] == [0, 1, 2]


def test_channels_last_is_a_layout_not_a_model_change(tmp_path, digits_shards):
    """train.channels_last (the default) runs the networks in NHWC, trains the same weights as
    NCHW up to kernel summation order, and saves contiguous NCHW tensors (the checkpoint and
    export contracts do not change); DeepSpeed, which flattens parameters, runs NCHW."""
    from training.train_config import TrainConfig
    from training.trainer import Trainer

    extra = {"data.loader": "deterministic", "loss.r1_interval": 2, "train.total_kimg": 0.016}
    nhwc = _cfg(tmp_path / "nhwc", digits_shards, **extra)
    assert nhwc.train.channels_last  # the default
    trainer = Trainer(nhwc)
    convs = [p for net in trainer.nets.values() for p in net.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous() for p in convs)  # a real NHWC layout, not a no-op
    ((batch,),) = trainer.streams.next(8, 1, 1, 0)
    (images,) = (
        b.images for b in batch.values()
    )  # the batches too: NCHW batches would make oneDNN reorder
    assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    del trainer
    train(nhwc)
    nchw = _cfg(tmp_path / "nchw", digits_shards, **extra, **{"train.channels_last": False})
    train(nchw)
    (wa, _), (wb, _) = _weights(nhwc.run_dir), _weights(nchw.run_dir)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].is_contiguous(), key
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-4, msg=key)
    generator, _ = load_export(nhwc.run_dir / "export")
    assert all(p.is_contiguous() for p in generator.parameters())
    assert not TrainConfig(backend="deepspeed").use_channels_last
    assert TrainConfig(backend="ddp").use_channels_last
