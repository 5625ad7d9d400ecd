"""`ganforge run --preset seed-mlp | dcgan-digits` end to end at tiny size: shards, training,
champion in the registry, grid, evaluation with the `confident` measure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow

TINY = {
    "prep.resolution": 16,
    "prep.workers": 1,
    "data.num_workers": 0,
    "data.shuffle_buffer": 64,
    "model.z_dim": 8,
    "model.mlp_hidden": 16,
    "model.channel_base": 64,
    "model.channel_max": 16,
    "train.batch": 8,
    "train.total_kimg": 0.032,
    "train.tick_kimg": 0.016,
    "train.grid_size": 8,
    "eval.num_images": 100,
}


@pytest.mark.parametrize(("preset", "family"), [("seed-mlp", "mlp"), ("dcgan-digits", "dcgan")])
def test_ganforge_run_preset(tmp_path, preset, family):
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--preset", preset, "--seeds", "0-3"]
    cmd += ["--set", f"work_dir={tmp_path}"]
    for key, value in TINY.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"models:/ganforge-{preset}@champion" in proc.stdout
    assert "confident" in proc.stdout
    grids = list((tmp_path / "outputs").glob("*grid.png"))
    assert len(grids) == 1 and Image.open(grids[0]).size == (2 * 16, 2 * 16)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    version = client.get_model_version_by_alias(f"ganforge-{preset}", "champion")
    assert version.tags["family"] == family
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert {"metrics/confident", "metrics/confident_real"} <= set(run.data.metrics)
