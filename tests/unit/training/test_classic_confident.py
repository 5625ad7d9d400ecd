"""The ``confident`` measure of the coverage evaluation: share of samples read with p >= 0.9."""

from __future__ import annotations

import math

import pytest
import torch

from training.metrics import EvalConfig, evaluate
from training.metrics.coverage import CONFIDENT_PROB, confident_share
from training.metrics.evaluation import result_names


def test_confident_share_by_hand():
    # softmax max per row: [9, 0, 0] -> 0.9998; [ln 9.5, 0] -> 0.905;
    # [0, 0] -> 0.5; [2, 0] -> 0.881 (below); [5, 0, 0] -> 0.987.
    rows = [
        torch.tensor([9.0, 0.0, 0.0]),
        torch.tensor([math.log(9.5), 0.0, -1e9]),
        torch.tensor([0.0, 0.0, -1e9]),
        torch.tensor([2.0, 0.0, -1e9]),
        torch.tensor([0.0, 5.0, 0.0]),
    ]
    logits = torch.stack(rows)
    assert CONFIDENT_PROB == 0.9
    assert confident_share(logits) == pytest.approx(3 / 5)
    assert confident_share(logits, threshold=0.5) == 1.0
    assert confident_share(logits, threshold=0.99) == pytest.approx(1 / 5)
    assert confident_share(torch.zeros(0, 3)) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        confident_share(logits, threshold=0.0)


def test_coverage_reports_confident_for_generated_and_real(digits_shards, tmp_path):
    from data_prep.manifest import load_manifest
    from training.data import DataConfig, build_loader

    manifest = load_manifest(str(digits_shards))
    batches = list(
        build_loader(manifest, DataConfig(num_workers=0, shuffle_buffer=0), batch=512, mode="epoch")
    )
    images = torch.cat([b[0] for b in batches]).float() / 127.5 - 1
    cfg = EvalConfig(metrics=["coverage"], num_images=300, batch=100, num_workers=0)
    assert result_names(cfg)[-2:] == ["confident", "confident_real"]

    def replay(z, c):
        return images[(z[:, 0].abs() * 1e4).long() % len(images)]

    def ambiguous(z, c):  # the average of two different digits: strokes of neither class
        idx = (z[:, 0].abs() * 1e4).long() % len(images)
        return 0.5 * (images[idx] + images[(idx + 7) % len(images)])

    real_like = evaluate(replay, manifest, cfg, z_dim=8, c_dim=0, cache_dir=tmp_path)
    blurred = evaluate(ambiguous, manifest, cfg, z_dim=8, c_dim=0, cache_dir=tmp_path)
    # The real images are read confidently, and so is a generator that replays them.
    assert real_like["confident_real"] > 0.8
    assert abs(real_like["confident"] - real_like["confident_real"]) < 0.1
    # Mixtures of two digits still cover the classes but are not read with confidence.
    assert blurred["confident"] < 0.6 * blurred["confident_real"]
    assert blurred["confident_real"] == real_like["confident_real"]  # the same real images
