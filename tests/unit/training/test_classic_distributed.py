"""DCGAN (BatchNorm) and WGAN (clipping, 5 critic rounds): 2 processes == 1 process.

BatchNorm statistics are per micro-batch by design (training/networks/classic.py): with the same
micro-batch size, 1 process with gradient accumulation and 2 processes normalise the same
micro-batches, so the runs agree in every parameter and buffer (G_ema's BatchNorm buffers
included: no rank folds its own batches into running statistics).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.integration.test_distributed import _train_args, run_launch
from training.checkpoint import latest_checkpoint

pytestmark = pytest.mark.slow

COMMON = {
    "model.z_dim": 8,
    "model.channel_base": 64,
    "model.channel_max": 16,
    "data.loader": "deterministic",
    "augment.mode": "fixed",  # DiffAugment/ADA-style augmentation works for these families too
    "augment.p": 0.3,
}
FAMILIES = {
    "dcgan": {
        "model.family": "dcgan",
        "model.conditional": True,
        "loss.kind": "bce",
        "train.total_kimg": 0.032,
    },
    "wgan": {
        "model.family": "wgan",
        "loss.kind": "wgan",
        "train.d_steps_per_g": 5,
        "train.optimizer_g.kind": "rmsprop",
        "train.optimizer_d.kind": "rmsprop",
        "train.total_kimg": 0.08,
    },
}


def _final(run_dir):
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    return load_file(str(ckpt / "models.safetensors")), json.loads(
        (ckpt / "state.json").read_text()
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_processes_match_one_process(tmp_path, digits_shards, family):
    extra = {**COMMON, **FAMILIES[family]}
    # global batch 8: one process runs 2 micro-batches of 4, two processes 1 each
    run_launch(
        1, _train_args(tmp_path / "one", digits_shards, **extra, **{"train.batch_per_device": 4})
    )
    proc = run_launch(2, _train_args(tmp_path / "two", digits_shards, **extra))
    assert "2 process(es)" in proc.stdout
    (w1, s1), (w2, s2) = _final(tmp_path / "one/runs/digits"), _final(tmp_path / "two/runs/digits")
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    assert (
        s1["images_seen"] == s2["images_seen"] == round(FAMILIES[family]["train.total_kimg"] * 1000)
    )
    assert w1.keys() == w2.keys()
    for key in w1:  # parameters and BatchNorm buffers alike
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-4, atol=1e-5, msg=key)
