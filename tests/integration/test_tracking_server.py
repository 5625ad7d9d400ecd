"""Training tracked by a real `mlflow server`: metrics, grids (as stepped images), the dataset
input and the export arrive; a server that dies mid-run costs nothing but a warning, what could
not be sent is kept as structured records, and `ganforge tracking sync` after the server is back
makes the run identical to one that was never interrupted."""

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


def _run_contents(client, run_id: str, work: Path) -> dict:
    """What a user sees of a run, minus what differs between two runs of the same config
    (timing values, paths, the command line)."""
    run = client.get_run(run_id)
    history = {
        key: [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in run.data.metrics
    }
    values = {
        key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in run.data.metrics
        if key.startswith("loss/")
    }

    def artifacts(path=None):
        out = []
        for a in client.list_artifacts(run_id, path):
            out += artifacts(a.path) if a.is_dir else [a.path]
        return out

    files = artifacts()
    return {
        "status": run.info.status,
        "history": history,
        "loss_values": values,
        "params": {  # the two runs differ only in their work dir and server address
            k: v.replace(str(work), "<work>")
            for k, v in run.data.params.items()
            if k != "tracking.uri"
        },
        "tags": sorted(run.data.tags),
        "images": sorted(
            f.split("+timestamp+")[0] + (" preview" if f.endswith(".webp") else " full")
            for f in files
            if f.startswith("images/")
        ),
        "files": sorted(f for f in files if not f.startswith("images/")),
        "inputs": [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs],
    }


def test_server_killed_mid_run_then_sync_gives_the_complete_run(tmp_path, digits_shards):
    from mlflow.tracking import MlflowClient

    settings = {
        "train.total_kimg": 0.096,
        "train.keep_checkpoints": 0,
        "tracking.system_metrics": False,  # sampled by wall clock: never equal between two runs
        "tracking.log_checkpoints": True,
        "data.loader": "deterministic",
    }
    for folder in ("ref-store", "store"):
        (tmp_path / folder).mkdir()
    # the reference: the same training with the server up all the time
    ref_server, ref_uri = start_mlflow_server(tmp_path / "ref-store")
    try:
        ref = subprocess.run(
            _train_cmd(tmp_path / "ref", digits_shards, ref_uri, **settings),
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert ref.returncode == 0, ref.stderr[-3000:]
        client = MlflowClient(ref_uri)
        (ref_run,) = client.search_runs(
            [client.get_experiment_by_name("ganforge-digits").experiment_id]
        )
        expected = _run_contents(client, ref_run.info.run_id, tmp_path / "ref")
    finally:
        stop(ref_server)

    store = tmp_path / "store"
    server, uri = start_mlflow_server(store)
    work = tmp_path / "work"
    run_dir = work / "runs/digits"
    proc = subprocess.Popen(
        _train_cmd(work, digits_shards, uri, **settings),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 2
    ) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    stop(server)  # the tracking server goes away mid-run
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    assert err.count("MLflow logging failed") == 1  # said once
    assert f"ganforge tracking sync {run_dir}" in err
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert rows[-1]["kimg"] == pytest.approx(0.096)  # every tick was recorded locally
    pending = [
        json.loads(line) for line in (run_dir / "tracking-pending.jsonl").read_text().splitlines()
    ]
    assert {r["op"] for r in pending} >= {"log_batch", "log_artifact", "log_image", "set_status"}

    def sync_to(uri: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pipeline.cli", "tracking", "sync", str(run_dir)]
        return subprocess.run(
            [*cmd, "--tracking-uri", uri],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    server, uri = start_mlflow_server(store)  # back (on another port)
    try:
        sync = sync_to(uri)
        assert sync.returncode == 0, sync.stdout + sync.stderr[-3000:]
        assert not (run_dir / "tracking-pending.jsonl").exists()
        client = MlflowClient(uri)
        (run,) = client.search_runs(
            [client.get_experiment_by_name("ganforge-digits").experiment_id]
        )
        got = _run_contents(client, run.info.run_id, work)
        assert got == expected
        again = sync_to(uri)
        assert again.returncode == 0 and "nothing to sync" in again.stdout
        assert _run_contents(client, run.info.run_id, work) == expected
    finally:
        stop(server)


def test_a_hung_server_loses_nothing_queued_at_close(tmp_path):
    """The server stops answering (SIGSTOP) with calls in flight and queued: close() gives up
    after its timeout, and everything not confirmed is in the pending file for sync."""
    import signal

    from mlflow.tracking import MlflowClient

    from training.tracking import Tracker, TrackingConfig, read_pending
    from training.tracking_sync import sync_run_dir

    (tmp_path / "store").mkdir()
    server, uri = start_mlflow_server(tmp_path / "store")
    try:
        run_dir = tmp_path / "run"
        tracker = Tracker(
            TrackingConfig(uri=uri, experiment="hung", system_metrics=False),
            work_dir=tmp_path,
            run_dir=run_dir,
            run_name="r",
        )
        tracker.log_metrics({"loss/g": 0.0}, step=0)
        os.killpg(server.pid, signal.SIGSTOP)  # hung, not dead: connections open, no answers
        for step in range(1, 6):
            tracker.log_metrics({"loss/g": float(step)}, step=step)
        started = time.monotonic()
        tracker.close("FINISHED", timeout=3)
        assert time.monotonic() - started < 30
        ops = [r["op"] for r in read_pending(run_dir)]
        assert ops.count("set_status") == 1 and len(ops) >= 6  # 5 metric batches + the status
        os.killpg(server.pid, signal.SIGCONT)
        tracker._thread.join(180)  # in a real run the process has exited by now
        result = sync_run_dir(run_dir)
        assert result.error is None, result.error
        client = MlflowClient(uri)
        history = client.get_metric_history(tracker.run_id, "loss/g")
        assert sorted(m.step for m in history) == [0, 1, 2, 3, 4, 5]  # each once
        assert client.get_run(tracker.run_id).info.status == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGCONT)
        stop(server)
