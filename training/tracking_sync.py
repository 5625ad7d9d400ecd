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

    from .tracking import apply_record

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


def sync_run_dir(run_dir: str | Path, tracking_uri: str | None = None) -> SyncResult:
    """Replay ``<run_dir>/tracking-pending.jsonl`` to the run's tracking server (or
    ``tracking_uri``); the file keeps only what still could not be sent."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run dir")
    info = read_run_file(run_dir)
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
