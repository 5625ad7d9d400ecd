"""Training tracked by a real `mlflow server`: metrics and grids arrive; a server that dies
mid-run costs nothing but a warning, and what could not be sent is kept locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from tests.integration.test_mlflow_server import start_mlflow_server, stop

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _train_cmd(work: Path, manifest: Path, uri: str, **extra) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--preset", "digits"]
    extra = {"tracking.enabled": True, "tracking.uri": uri, **extra}
    for item in tiny_overrides(work, manifest, **extra):
        cmd += ["--set", item]
    return cmd


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_tracked_run_on_a_server(tmp_path, digits_shards):
    server, uri = start_mlflow_server(tmp_path)
    try:
        proc = subprocess.run(
            _train_cmd(tmp_path / "work", digits_shards, uri, **{"train.total_kimg": 0.048}),
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        (run,) = client.search_runs(
            [client.get_experiment_by_name("ganforge-digits").experiment_id]
        )
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss/g")) == 3
        assert run.data.tags["ganforge.world_size"] == "1"
        assert run.data.tags["ganforge.dataset_sha256"]
        samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
        assert len(samples) >= 2 and all(p.endswith(".png") for p in samples)
        export = {a.path for a in client.list_artifacts(run.info.run_id, "export")}
        assert export == {"export/generator.json", "export/weights.safetensors"}
    finally:
        stop(server)


def test_training_survives_the_server_dying(tmp_path, digits_shards):
    server, uri = start_mlflow_server(tmp_path)
    work = tmp_path / "work"
    proc = subprocess.Popen(
        _train_cmd(work, digits_shards, uri, **{"train.total_kimg": 0.4}),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = work / "runs/digits/metrics.jsonl"
    deadline = time.time() + 180
    while (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 2
    ) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    stop(server)  # the tracking server goes away mid-run
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    assert err.count("MLflow logging failed") == 1  # said once
    assert "could not be sent" in err
    pending = (work / "runs/digits/tracking-pending.jsonl").read_text().splitlines()
    assert pending and all(json.loads(line)["method"] for line in pending)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert rows[-1]["kimg"] == pytest.approx(0.4)  # every tick was recorded locally
    assert (work / "runs/digits/export/weights.safetensors").is_file()
