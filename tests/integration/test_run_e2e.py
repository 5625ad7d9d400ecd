"""`ganforge run` end to end at tiny size: shards, training, MLflow run, registry alias, grid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

TINY = {
    "prep.resolution": 16,
    "prep.workers": 1,
    "data.num_workers": 0,
    "data.shuffle_buffer": 64,
    "model.z_dim": 24,  # room for the preset's 20-way InfoGAN code
    "model.w_dim": 16,
    "model.channel_base": 128,
    "model.channel_max": 16,
    "train.batch": 8,
    "train.total_kimg": 0.032,
    "train.tick_kimg": 0.016,
    "train.grid_size": 8,
    "eval.num_images": 100,
}


def test_ganforge_run_end_to_end(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--seeds",
        "0-15",
        "--processes",  # auto (the default) is 1 without a GPU: launch 2 to test the launch
        "2",
        "--set",
        f"work_dir={tmp_path}",
    ]
    for key, value in TINY.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for label in (
        "shards:",
        "run:",
        "mlflow run:",
        "model:",
        "final grid:",
        "open the UI:",
        "quality:",
    ):
        assert label in out
    assert "models:/ganforge-digits@champion" in out
    assert "[2/4] train: stylegan2, 0.032 kimg, 2 processes" in out
    assert "2 process(es) on cpu" in out  # the trainer's own start line, from the main process
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in out

    grid = tmp_path / "outputs" / "digits-grid.png"
    assert Image.open(grid).size == (4 * 16, 4 * 16)  # 16 seeds at 16 px

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("ganforge-digits")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.batch"] == "8"
    assert run.data.tags["ganforge.family"] == "stylegan2"
    assert run.data.tags["ganforge.world_size"] == "2"
    assert {"loss/g", "loss/d", "metrics/coverage"} <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "loss/d")
    assert len(history) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples", "export", "config.yaml"} <= artifacts
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run.info.run_id, "samples"))
    version = client.get_model_version_by_alias("ganforge-digits", "champion")
    assert version.tags["family"] == "stylegan2" and "metric.coverage" in version.tags

    # idempotent: the same command again reuses the shards and the finished run
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout
