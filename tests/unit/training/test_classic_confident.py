"""The ``confident`` measure of the coverage evaluation: share of samples read with p >= 0.9."""

from __future__ import annotations

import math

import pytest
import torch

from training.metrics import EvalConfig, evaluate
from training.metrics.coverage import CONFIDENT_PROB, confident_balanced, confident_share
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


def test_confident_balanced_caps_each_class_at_its_fair_share():
    def sure(cls: int, k: int = 4) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(cls), k).double() * 20

    unsure = torch.zeros(4)  # p = 0.25 everywhere: read as class 0, not confidently
    # 8 samples, 4 classes (fair share 2/8 each): class 0 x4 confident (capped at 2/8), class 1
    # x1 (1/8), class 2 x2 (2/8), class 3 only unsure -> (2 + 1 + 2 + 0) / 8
    logits = torch.stack([sure(0)] * 4 + [sure(1)] + [sure(2)] * 2 + [unsure])
    assert confident_share(logits) == pytest.approx(7 / 8)
    assert confident_balanced(logits) == pytest.approx(5 / 8)
    balanced = torch.stack([sure(c) for c in (0, 1, 2, 3, 0, 1, 2, 3)])
    assert confident_balanced(balanced) == pytest.approx(1.0)
    assert confident_balanced(torch.zeros(0, 4)) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        confident_balanced(logits, threshold=1.5)


def test_coverage_reports_confident_for_generated_and_real(digits_shards, tmp_path):
    from data_prep.manifest import load_manifest
    from training.data import DataConfig, build_loader

    manifest = load_manifest(str(digits_shards))
    batches = list(
        build_loader(manifest, DataConfig(num_workers=0, shuffle_buffer=0), batch=512, mode="epoch")
    )
    images = torch.cat([b[0] for b in batches]).float() / 127.5 - 1
    labels = torch.cat([b[1] for b in batches])
    cfg = EvalConfig(metrics=["coverage"], num_images=300, batch=100, num_workers=0)
    assert result_names(cfg)[-3:] == ["confident", "confident_real", "confident_balanced"]

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
    # A generator that replays only the digits 0-4 is read confidently but fills half the
    # classes: the balanced share counts only those.
    low = images[torch.tensor(list(range(len(images))))[labels < 5]]

    def half(z, c):
        return low[(z[:, 0].abs() * 1e4).long() % len(low)]

    halved = evaluate(half, manifest, cfg, z_dim=8, c_dim=0, cache_dir=tmp_path)
    assert real_like["confident_balanced"] > 0.8 * real_like["confident"]
    assert halved["confident"] > 0.8
    assert halved["confident_balanced"] <= 0.5 + 1e-9
