"""The Tracker against a real MLflow store (sqlite): what the UI shows, structured pending
records when the server is unreachable, and an idempotent `tracking sync`."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from training.tracking import PENDING_FILE, RUN_FILE, Tracker, TrackingConfig, read_pending
from training.tracking_sync import sync_run_dir


def _dead_uri() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _png(path, value):
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def _log_a_run(tracker: Tracker, tmp_path, manifest_dir) -> None:
    tracker.log_params({"train.batch": 8, "model.z_dim": 16})
    tracker.set_tags({"ganforge.family": "stylegan2"})
    tracker.log_input(manifest_dir, name="digits", digest="ab" * 32)
    for step in (16, 32):
        tracker.log_metrics({"loss/g": step / 10, "loss/d": -step / 10}, step=step)
        tracker.log_image(_png(tmp_path / f"grid-{step}.png", step), "samples", step=step)
    tracker.log_artifact(_png(tmp_path / "curves.png", 1))
    (tmp_path / "export").mkdir(exist_ok=True)
    (tmp_path / "export/generator.json").write_text("{}")
    tracker.log_artifacts(tmp_path / "export", "export")


def _contents(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    history = {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k))
        for k in run.data.metrics
        if not k.startswith("system/")
    }
    images = sorted(a.path for a in client.list_artifacts(run_id, "images"))
    return {
        "status": run.info.status,
        "params": run.data.params,
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "history": history,
        "images": [p.split("+timestamp+")[0] for p in images],
        "files": sorted(a.path for a in client.list_artifacts(run_id))
        + sorted(a.path for a in client.list_artifacts(run_id, "export")),
        "inputs": [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs],
    }


@pytest.fixture
def manifest_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    return folder


def test_what_the_ui_shows(tmp_path, manifest_dir, monkeypatch):
    # a sample every 0.1 s, logged at once: the run is ~1 s long, and a monitor stopped before its
    # first logging step logs nothing
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = TrackingConfig(uri=uri, experiment="ui", system_metrics=True)
    tracker = Tracker(cfg, work_dir=tmp_path, run_dir=tmp_path / "run", run_name="r")
    _log_a_run(tracker, tmp_path, manifest_dir)
    time.sleep(2.5)  # two system-metrics samples
    tracker.close("FINISHED")
    client = MlflowClient(uri)
    got = _contents(client, tracker.run_id)
    assert got["status"] == "FINISHED"
    assert got["params"] == {"train.batch": "8", "model.z_dim": "16"}
    assert got["history"]["loss/g"] == [(16, 1.6), (32, 3.2)]
    # the image slider: one full-size PNG and one compressed preview per step
    assert got["images"] == [
        "images/samples+step+16",
        "images/samples+step+16",
        "images/samples+step+32",
        "images/samples+step+32",
    ]
    assert got["inputs"] == [("digits", "ab" * 18)]
    (dataset_input,) = client.get_run(tracker.run_id).inputs.dataset_inputs
    assert json.loads(dataset_input.dataset.source)["uri"].endswith("data/manifest.json")
    assert json.loads(dataset_input.dataset.profile)["sha256"] == "ab" * 32
    system = [k for k in client.get_run(tracker.run_id).data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system
    assert "export/generator.json" in got["files"] and "curves.png" in got["files"]
    assert json.loads((tmp_path / "run" / RUN_FILE).read_text())["run_id"] == tracker.run_id
    assert not (tmp_path / "run" / PENDING_FILE).exists()


def test_unreachable_server_keeps_structured_records_and_sync_replays_them(tmp_path, manifest_dir):
    # reference: the same calls logged live
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    live = Tracker(
        TrackingConfig(uri=uri, experiment="e", system_metrics=False),
        work_dir=tmp_path,
        run_dir=tmp_path / "live",
        run_name="r",
    )
    _log_a_run(live, tmp_path, manifest_dir)
    live.close("FINISHED")

    run_dir = tmp_path / "offline"
    started = time.monotonic()
    offline = Tracker(
        TrackingConfig(uri=_dead_uri(), experiment="e", system_metrics=False),
        work_dir=tmp_path,
        run_dir=run_dir,
        run_name="r",
    )
    _log_a_run(offline, tmp_path, manifest_dir)
    offline.close("FINISHED")
    assert time.monotonic() - started < 60  # a dead server costs seconds, not MLflow's minutes
    records = read_pending(run_dir)
    assert records[0]["op"] == "create_run"
    metrics = [m for r in records if r["op"] == "log_batch" for m in r.get("metrics", [])]
    assert {"key": "loss/g", "value": 1.6, "step": 16} == {
        k: metrics[0][k] for k in ("key", "value", "step")
    }  # structured, not str() of entity objects
    assert records[-1] == {**records[-1], "op": "set_status", "status": "FINISHED"}

    result = sync_run_dir(run_dir, tracking_uri=uri)
    assert result.error is None and result.remaining == []
    assert not (run_dir / PENDING_FILE).exists()
    client = MlflowClient(uri)
    assert _contents(client, result.run_id) == _contents(client, live.run_id)
    assert json.loads((run_dir / RUN_FILE).read_text())["run_id"] == result.run_id

    # idempotent: replaying the same records again adds nothing
    (run_dir / PENDING_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    again = sync_run_dir(run_dir, tracking_uri=uri)
    assert again.run_id == result.run_id and again.sent < len(records)
    assert _contents(client, result.run_id) == _contents(client, live.run_id)
    assert len(client.search_runs([client.get_experiment_by_name("e").experiment_id])) == 2


def test_resume_continues_the_same_run(tmp_path, manifest_dir):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = TrackingConfig(uri=uri, experiment="e", system_metrics=False)
    first = Tracker(cfg, work_dir=tmp_path, run_dir=tmp_path / "run", run_name="r")
    first.log_metrics({"loss/g": 1.0}, step=8)
    first.close("KILLED")
    client = MlflowClient(uri)
    assert client.get_run(first.run_id).info.status == "KILLED"
    # resuming without the id in hand (e.g. a checkpoint without it): the run dir's file has it
    second = Tracker(cfg, work_dir=tmp_path, run_dir=tmp_path / "run", run_name="r", resuming=True)
    assert second.run_id == first.run_id
    assert client.get_run(first.run_id).info.status == "RUNNING"
    second.log_metrics({"loss/g": 0.5}, step=16)
    second.close("FINISHED")
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first.run_id, "loss/g")] == [8, 16]
    # a fresh start in the same run dir is a new run
    third = Tracker(cfg, work_dir=tmp_path, run_dir=tmp_path / "run", run_name="r")
    third.close()
    assert third.run_id != first.run_id


def test_sync_without_a_server_is_one_clear_error(tmp_path, manifest_dir):
    run_dir = tmp_path / "run"
    dead = _dead_uri()
    t = Tracker(
        TrackingConfig(uri=dead, experiment="e", system_metrics=False),
        work_dir=tmp_path,
        run_dir=run_dir,
        run_name="r",
    )
    t.log_metrics({"loss/g": 1.0}, step=8)
    t.close()
    from pipeline.cli import main

    assert main(["tracking", "sync", str(run_dir)]) == 2
    assert len(read_pending(run_dir)) == 3  # create_run, the metric, the status: all kept


def test_a_training_run_as_the_ui_shows_it(tmp_path, digits_shards, monkeypatch):
    """A real (tiny) `ganforge train` on a sqlite store: stepped sample grids, the dataset input,
    git commit and command line, checkpoints as artifacts, system metrics."""
    from data_prep.manifest import load_manifest
    from pipeline.cli import main
    from tests.conftest import tiny_overrides

    # a sample every 0.1 s, logged at once: the run is ~1 s long, and a monitor stopped before its
    # first logging step logs nothing
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    work = tmp_path / "work"
    overrides = tiny_overrides(
        work,
        digits_shards,
        **{
            "tracking.enabled": True,
            "tracking.log_checkpoints": True,
            "train.total_kimg": 0.048,
            "train.keep_checkpoints": 0,
        },
    )
    assert main(["train", "--preset", "digits"] + [a for o in overrides for a in ("--set", o)]) == 0
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ganforge-digits").experiment_id])
    run_id = run.info.run_id
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    steps = sorted({int(p.split("+step+")[1].split("+")[0]) for p in images})
    assert steps == [16, 32, 48]  # images seen, the x axis of every tick metric
    assert [m.step for m in client.get_metric_history(run_id, "loss/g")] == [16, 32, 48]
    manifest = load_manifest(str(digits_shards))
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest.sha256[:36]
    assert json.loads(dataset_input.dataset.source)["uri"] == (
        (digits_shards / "manifest.json").resolve().as_uri()
    )
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    assert run.data.tags["ganforge.command"]
    checkpoints = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert checkpoints == {f"checkpoints/ckpt-{n:012d}" for n in (16, 32, 48)}
    files = {a.path for a in client.list_artifacts(run_id, "checkpoints/ckpt-000000000048")}
    assert "checkpoints/ckpt-000000000048/checksums.json" in files
    assert any(k.startswith("system/") for k in run.data.metrics)


def test_sync_waits_for_the_training_process(tmp_path):
    import subprocess
    import sys

    from training.tracking import read_run_file, write_run_file

    run_dir = tmp_path / "run"
    t = Tracker(
        TrackingConfig(uri=_dead_uri(), experiment="e", system_metrics=False),
        work_dir=tmp_path,
        run_dir=run_dir,
        run_name="r",
    )
    t.close()
    assert read_run_file(run_dir)["writer"] is None  # closed: sync may go
    # a training process that still runs (here: a sleeping child standing in for it)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = read_run_file(run_dir)
        host = socket.gethostname()
        write_run_file(run_dir, {**info, "writer": {"host": host, "pid": child.pid}})
        with pytest.raises(ValueError, match=f"pid {child.pid}.*may still be writing"):
            sync_run_dir(run_dir, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    finally:
        child.kill()
        child.wait()
    # the process is gone (killed without closing): sync proceeds
    result = sync_run_dir(run_dir, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert result.error is None and result.run_id


def test_replaying_a_half_uploaded_image_completes_it_without_a_duplicate(tmp_path):
    """A server that dies between MLflow's two uploads of one image (the PNG, then its
    +compressed.webp preview) leaves half an image; the replay adds the preview under the same
    name instead of logging a second image for that step, and a second replay sends nothing."""
    from training.tracking_sync import apply_record

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = client.create_run(client.create_experiment("half")).info.run_id
    grid = tmp_path / "grid.png"
    _png(grid, 200)
    record = {"op": "log_image", "path": str(grid), "key": "samples", "step": 32, "timestamp": 1234}
    half = tmp_path / "half" / "samples+step+32+timestamp+1234+0f0f.png"
    half.parent.mkdir()
    _png(half, 200)
    client.log_artifact(run_id, str(half), "images")  # what the dead server kept

    assert apply_record(client, run_id, record, dedup=True) == "sent"
    names = sorted(a.path for a in client.list_artifacts(run_id, "images"))
    assert names == [
        "images/samples+step+32+timestamp+1234+0f0f+compressed.webp",
        "images/samples+step+32+timestamp+1234+0f0f.png",
    ]
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"
    assert apply_record(client, run_id, record, dedup=True).startswith("skipped")
    assert len(client.list_artifacts(run_id, "images")) == 2
    other_step = dict(record, step=48)  # nothing of it in the run: a whole new image
    assert apply_record(client, run_id, other_step, dedup=True) == "sent"
    assert len(client.list_artifacts(run_id, "images")) == 4
