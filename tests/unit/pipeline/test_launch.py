"""`ganforge run --processes`: how many local training processes, and the result contract
between the launched `train` and `run` (the launch itself: tests/integration/test_run_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.launch import resolve_processes, result_from_json, result_to_json
from training.trainer import TrainResult


def _cfg(batch: int):
    return load_config("digits", [f"train.batch={batch}"])


def test_explicit_counts_and_bad_values():
    assert resolve_processes("3", _cfg(16)) == 3
    assert resolve_processes(1, _cfg(16)) == 1
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ValueError, match="--processes: expected auto or a positive integer"):
            resolve_processes(bad, _cfg(16))


def test_auto_is_one_on_cpu_and_the_gpus_that_divide_the_batch(monkeypatch):
    import torch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_processes("auto", _cfg(16)) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for gpus, batch, expected in ((8, 64, 8), (6, 16, 4), (3, 16, 2), (8, 4, 4), (1, 16, 1)):
        monkeypatch.setattr(torch.cuda, "device_count", lambda n=gpus: n)
        assert resolve_processes("auto", _cfg(batch)) == expected, (gpus, batch)


def test_auto_under_a_launcher_is_one(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_processes("AUTO", _cfg(16)) == 1


def test_result_json_round_trip():
    result = TrainResult(
        run_dir=Path("/w/runs/digits"),
        export_dir=Path("/w/runs/digits/export"),
        images_seen=40_000,
        status="finished",
        mlflow_run_id="abc",
        last_checkpoint=None,
        grid_path=Path("/w/runs/digits/samples/latest.png"),
        metrics={"metrics/confident": 0.875},
    )
    assert result_from_json(result_to_json(result)) == result
