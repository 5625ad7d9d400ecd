"""Replay a run dir's pending tracking records to MLflow, idempotently.

``ganforge tracking sync RUN_DIR`` (and the live tracker, when the server comes back) sends the
records of ``<run_dir>/tracking-pending.jsonl`` in order. Replaying twice changes nothing:
metrics already in the run (same key, step, timestamp, value), params already set, images
already logged (same key, step, timestamp) and dataset inputs already present are skipped; tags,
artifacts and the run status simply overwrite themselves. A run that could not be created at
start (server down) is created from its ``create_run`` record and its id written to
``<run_dir>/mlflow-run.json``, so a resumed run continues it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tracking import (
    check_tracking_server,
    fail_fast_defaults,
    get_or_create_experiment,
    read_pending,
    read_run_file,
    write_pending,
    write_run_file,
)

# ----------------------------------------------------------------------------------------------
# Executing one record (the live tracker and `ganforge tracking sync` share this)


def apply_record(client: Any, run_id: str, record: dict[str, Any], *, dedup: bool = False) -> str:
    """Send one record to MLflow for ``run_id``; -> "sent" or "skipped: <why>". With ``dedup``,
    what the run already holds is not sent again (replays are idempotent)."""
    from mlflow.entities import Metric, Param, RunTag

    op = record["op"]
    if op == "log_batch":
        metrics = [
            Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m["step"]))
            for m in record.get("metrics", [])
        ]
        params = [Param(p["key"], p["value"]) for p in record.get("params", [])]
        tags = [RunTag(t["key"], t["value"]) for t in record.get("tags", [])]
        if dedup and metrics:
            metrics = _new_metrics(client, run_id, metrics)
        if dedup and params:
            have = client.get_run(run_id).data.params
            params = [p for p in params if have.get(p.key) != p.value]
        if not (metrics or params or tags):
            return "skipped: already in the run"
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    elif op == "log_artifact":
        path = Path(record["path"])
        if not path.exists():
            return f"skipped: {path} no longer exists"
        if path.is_dir():
            client.log_artifacts(run_id, str(path), record.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(path), record.get("artifact_path"))
    elif op == "log_image":
        path = Path(record["path"])
        if not path.exists():
            return f"skipped: {path} no longer exists"
        from PIL import Image

        state = _image_state(client, run_id, record) if dedup else None
        if state == "complete":
            return "skipped: already in the run"
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        if state is not None:  # the server died between the PNG and its preview
            _complete_image(client, run_id, image, state)
        else:
            client.log_image(
                run_id,
                image,
                key=record["key"],
                step=int(record["step"]),
                timestamp=int(record["timestamp"]),
                synchronous=True,
            )
    elif op == "log_input":
        from mlflow.entities import Dataset, DatasetInput, InputTag

        d = record["dataset"]
        if dedup and any(
            i.dataset.name == d["name"] and i.dataset.digest == d["digest"]
            for i in client.get_run(run_id).inputs.dataset_inputs
        ):
            return "skipped: already in the run"
        dataset = Dataset(
            name=d["name"],
            digest=d["digest"],
            source_type=d["source_type"],
            source=d["source"],
            profile=d.get("profile"),
        )
        tags = [InputTag(k, v) for k, v in record.get("tags", {}).items()]
        client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])
    elif op == "set_status":
        if record["status"] == "RUNNING":
            client.update_run(run_id, status="RUNNING")
        else:
            client.set_terminated(run_id, status=record["status"], end_time=record.get("end_time"))
    elif op == "create_run":
        return "skipped: handled by the caller"
    else:
        return f"skipped: unknown op {op!r}"
    return "sent"


def _new_metrics(client: Any, run_id: str, metrics: list) -> list:
    keep = []
    seen: dict[str, set] = {}
    for m in metrics:
        if m.key not in seen:
            seen[m.key] = {
                (h.step, h.timestamp, h.value) for h in client.get_metric_history(run_id, m.key)
            }
        if (m.step, m.timestamp, m.value) not in seen[m.key]:
            keep.append(m)
    return keep


def _image_state(client: Any, run_id: str, record: dict) -> str | None:
    """How much of a ``log_image`` record the run holds: "complete" (the PNG and MLflow's
    ``+compressed.webp`` preview), None (nothing), else the run-relative name of the PNG whose
    preview is missing (MLflow uploads the two one after the other: a server that dies between
    them leaves half an image, which a plain replay would duplicate)."""
    key = record["key"].replace("/", "~")
    prefix = f"images/{key}+step+{int(record['step'])}+timestamp+{int(record['timestamp'])}+"
    names = {a.path for a in client.list_artifacts(run_id, "images") if a.path.startswith(prefix)}
    pngs = sorted(n for n in names if n.endswith(".png"))
    if not pngs:
        return None
    for png in pngs:
        if png[: -len(".png")] + "+compressed.webp" in names:
            return "complete"
    return pngs[0]


def _complete_image(client: Any, run_id: str, image: Any, png_name: str) -> None:
    """Upload the missing preview of ``png_name`` under the name MLflow gives it, so that the
    run ends with exactly one image for that step, as if the first upload had finished."""
    import tempfile

    from mlflow.tracking.multimedia import compress_image_size
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES

    preview = Path(png_name).name[: -len(".png")] + "+compressed.webp"
    with tempfile.TemporaryDirectory() as tmp:
        compress_image_size(image).save(Path(tmp) / preview)
        client.log_artifact(run_id, str(Path(tmp) / preview), "images")
    client.set_tag(run_id, MLFLOW_LOGGED_IMAGES, True)


@dataclass(kw_only=True)
class SyncResult:
    sent: int = 0
    """Records sent to the server."""
    skipped: list[str] = field(default_factory=list)
    """One line per record not sent (already in the run, file gone), with the reason."""
    remaining: list[dict[str, Any]] = field(default_factory=list)
    """Records still not sent (the server failed on the first of them)."""
    error: str | None = None
    """Why sending stopped (None: everything went through)."""
    run_id: str | None = None
    """The MLflow run the records went to."""


def _resolve_run(client: Any, run_ref: str, records: list[dict], run_dir: Path, uri: str) -> str:
    """``run_ref`` is an MLflow run id, or ``local:<id>`` for a run created at sync time."""
    if not run_ref.startswith("local:"):
        return run_ref
    local_id = run_ref.split(":", 1)[1]
    info = read_run_file(run_dir)
    if info.get("local_id") == local_id and info.get("run_id"):
        return info["run_id"]
    create = next((r for r in records if r["op"] == "create_run"), None)
    if create is None:
        raise ValueError(
            f"{run_dir}: records name the local run {local_id} but neither "
            f"mlflow-run.json nor a create_run record says which MLflow run it is"
        )
    exp_id = get_or_create_experiment(client, create["experiment"], create.get("work_dir"), uri)
    run_id = client.create_run(
        exp_id, run_name=create.get("run_name"), start_time=create.get("start_time")
    ).info.run_id
    write_run_file(run_dir, {**info, "run_id": run_id, "local_id": local_id, "tracking_uri": uri})
    return run_id


def sync_records(
    records: list[dict[str, Any]], *, run_dir: str | Path, uri: str
) -> list[dict[str, Any]]:
    """Send ``records`` in order; -> the ones still not sent (from the first failure on)."""
    return replay(records, run_dir=run_dir, uri=uri).remaining


def replay(records: list[dict[str, Any]], *, run_dir: str | Path, uri: str) -> SyncResult:
    from mlflow.tracking import MlflowClient

    fail_fast_defaults()
    run_dir = Path(run_dir)
    result = SyncResult()
    if not records:
        return result
    check_tracking_server(uri)
    client = MlflowClient(tracking_uri=uri)
    resolved: dict[str, str] = {}
    for i, record in enumerate(records):
        try:
            ref = record.get("run") or "local:?"
            if ref not in resolved:
                resolved[ref] = _resolve_run(client, ref, records, run_dir, uri)
            result.run_id = resolved[ref]
            outcome = apply_record(client, resolved[ref], record, dedup=True)
        except Exception as exc:  # noqa: BLE001 - keep the rest for the next attempt
            first = str(exc).splitlines()[0] if str(exc) else ""
            result.error = f"{type(exc).__name__}: {first}"[:300]
            result.remaining = records[i:]
            return result
        if outcome == "sent":
            result.sent += 1
        elif record["op"] != "create_run":
            result.skipped.append(f"{record['op']}: {outcome.removeprefix('skipped: ')}")
    return result


def _check_no_writer(run_dir: Path, info: dict[str, Any]) -> None:
    """A training process that still runs on this run dir owns its pending file."""
    import os

    from .tracking import writer_id

    writer = info.get("writer")
    if not writer or writer == writer_id():
        return
    alive = True
    if writer.get("host") == writer_id()["host"]:
        try:
            os.kill(int(writer["pid"]), 0)
        except ProcessLookupError:
            alive = False
        except (OSError, ValueError, KeyError):
            pass
    if alive:
        raise ValueError(
            f"{run_dir}: training (pid {writer.get('pid')} on {writer.get('host')}) may still be "
            f"writing this run dir; run `tracking sync` after it ends (--force if it is gone)"
        )


def sync_run_dir(
    run_dir: str | Path, tracking_uri: str | None = None, *, force: bool = False
) -> SyncResult:
    """Replay ``<run_dir>/tracking-pending.jsonl`` to the run's tracking server (or
    ``tracking_uri``); the file keeps only what still could not be sent. Refuses while the
    training process that writes the run dir is alive (``force``: do it anyway)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run dir")
    info = read_run_file(run_dir)
    if not force:
        _check_no_writer(run_dir, info)
    uri = tracking_uri or info.get("tracking_uri")
    if not uri:
        raise ValueError(
            f"{run_dir}: no mlflow-run.json naming the tracking server; pass --tracking-uri"
        )
    records = read_pending(run_dir)
    result = replay(records, run_dir=run_dir, uri=uri)
    if records:
        write_pending(run_dir, result.remaining)
    if result.run_id is None:
        result.run_id = read_run_file(run_dir).get("run_id")
    return result
