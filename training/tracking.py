"""MLflow tracking for training runs, from the main process only, never fatal, nothing lost.

Every tracking call becomes a small JSON *record* (``{"op": "log_batch", "metrics": [...]}``)
executed by a background thread, so a slow or dead tracking server never stalls a training step.
When a call fails, the tracker says so once, keeps the record, and retries it later (and at the
end). Records that still could not be sent are kept, structured, in
``<run_dir>/tracking-pending.jsonl`` (rewritten atomically whenever that list changes, so a kill
loses nothing either); ``ganforge tracking sync RUN_DIR`` replays them idempotently once the
server is back (``training/tracking_sync.py``). The run id lives in ``<run_dir>/mlflow-run.json``
so a resumed run continues the same MLflow run. If the server cannot be reached at start, the
run is created at sync time from a ``create_run`` record.

What the MLflow UI shows for a run: params (the flattened config), tick metrics with
``step = images_seen``, sample grids through ``log_image`` (the image slider), system metrics
(CPU/RAM/disk/network, GPU with pynvml), the dataset as a run input (the manifest as source, its
sha256 as digest), git commit and command line as tags, the export (and checkpoints with
``tracking.log_checkpoints``) as artifacts.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_FILE = "mlflow-run.json"
PENDING_FILE = "tracking-pending.jsonl"
RECORD_VERSION = 1


@dataclass(kw_only=True)
class TrackingConfig:
    enabled: bool = True
    """Log to MLflow (only the main process talks to it)."""
    uri: str | None = None
    """Tracking URI (None: $MLFLOW_TRACKING_URI, else a sqlite store in the work dir)."""
    experiment: str = "ganforge"
    """MLflow experiment name."""
    run_name: str | None = None
    """MLflow run name (None: the config name)."""
    system_metrics: bool = True
    """Log CPU/RAM/disk (and GPU with pynvml) utilisation through MLflow's system-metrics
    monitor every $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (default 10)."""
    log_checkpoints: bool = False
    """Also upload every checkpoint folder as run artifacts (checkpoints/<name>/); large."""
    register: bool = False
    """Register the exported generator in the Model Registry when training finishes (never for
    an interrupted or diverged run)."""
    model_name: str = "ganforge-generator"
    """Registered model name."""
    alias: str | None = "champion"
    """Alias set on the new version when registering (None: no alias)."""

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ValueError("experiment: must not be empty")
        if not self.model_name:
            raise ValueError("model_name: must not be empty")


class TrackingUnavailable(ValueError):
    """The tracking server cannot be reached (a user error: wrong URI or server down)."""


def fail_fast_defaults() -> None:
    """MLflow retries an unreachable server for minutes by default (7 retries, 120 s timeout);
    ganforge's own retry/pending logic makes a few seconds enough. Explicit env settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Raise ``TrackingUnavailable`` within ``timeout`` seconds if ``uri`` is an http(s) tracking
    server that does not answer; local stores (sqlite, file, databricks, ...) pass."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # something answers (a proxy, an older server without /health): let MLflow talk
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it, or check "
            f"--tracking-uri / $MLFLOW_TRACKING_URI / tracking.uri"
        ) from None


def default_tracking_uri(work_dir: str | Path) -> str:
    """$MLFLOW_TRACKING_URI, else ``sqlite:///<work_dir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(work_dir).resolve() / 'mlflow.db').as_posix()}"


def resolve_tracking_uri(cfg: TrackingConfig, work_dir: str | Path) -> str:
    return cfg.uri or default_tracking_uri(work_dir)


def artifact_root(work_dir: str | Path) -> str:
    """Artifact location for experiments created in a local store (next to the sqlite file)."""
    return (Path(work_dir).resolve() / "mlartifacts").as_uri()


def is_local_store(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


def get_or_create_experiment(
    client: Any, name: str, work_dir: str | Path | None, tracking_uri: str
) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # A local (sqlite/file) store would otherwise put artifacts in ./mlruns of the cwd.
    local = work_dir is not None and is_local_store(tracking_uri)
    return client.create_experiment(
        name, artifact_location=artifact_root(work_dir) if local else None
    )


# ----------------------------------------------------------------------------------------------
# The run-dir files: which MLflow run this run dir is, and what could not be sent yet


def writer_id() -> dict[str, Any]:
    """This process, as recorded in the run file while it may write the pending records."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid()}


def read_run_file(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError):
        return {}  # a torn file only costs the link to the old MLflow run, never training


def write_run_file(run_dir: str | Path, info: dict[str, Any]) -> None:
    from .networks.export import atomic_write

    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    atomic_write(Path(run_dir) / RUN_FILE, lambda tmp: Path(tmp).write_text(text))


def read_pending(run_dir: str | Path) -> list[dict[str, Any]]:
    """The structured records waiting in ``<run_dir>/tracking-pending.jsonl`` (oldest first)."""
    path = Path(run_dir) / PENDING_FILE
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n}: not a JSON record; fix or delete that line") from None
        if not isinstance(record, dict) or "op" not in record:
            raise ValueError(f"{path}:{n}: not a ganforge tracking record (no 'op')")
        records.append(record)
    return records


def write_pending(run_dir: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace the pending file with ``records`` atomically (none: remove it)."""
    from .networks.export import atomic_write

    path = Path(run_dir) / PENDING_FILE
    if not records:
        path.unlink(missing_ok=True)
        return
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def dataset_record(manifest_dir: str | Path, name: str, digest: str, *, context: str) -> dict:
    """The run-input record of a dataset: the manifest as source, its sha256 as digest."""
    manifest = Path(manifest_dir)
    if manifest.is_dir():
        manifest = manifest / "manifest.json"
    source = str(manifest) if "://" in str(manifest) else manifest.resolve().as_uri()
    return {
        "op": "log_input",
        "dataset": {
            "name": name,
            "digest": digest[:36],  # MLflow's digest column holds 36 characters
            "source_type": "local" if source.startswith("file:") else "http",
            "source": json.dumps({"uri": source}),
            "profile": json.dumps({"sha256": digest}),
        },
        "tags": {"mlflow.data.context": context},
    }


# ----------------------------------------------------------------------------------------------
# The tracker


class Tracker:
    """Asynchronous, failure-tolerant MLflow logging for one run (main process only).

    ``resuming``: continue this run dir's MLflow run (``resume_run_id``, else the id in
    ``<run_dir>/mlflow-run.json``) instead of creating a new one."""

    RETRY_SECONDS = 30.0

    def __init__(
        self,
        cfg: TrackingConfig,
        *,
        work_dir: str | Path,
        run_dir: str | Path,
        run_name: str,
        resume_run_id: str | None = None,
        resuming: bool | None = None,
    ) -> None:
        fail_fast_defaults()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.uri = resolve_tracking_uri(cfg, work_dir)
        resuming = bool(resume_run_id) if resuming is None else resuming
        info = read_run_file(self.run_dir) if resuming else {}
        self.run_id: str | None = resume_run_id or info.get("run_id")
        self.local_id: str = info.get("local_id") or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._pending: list[dict] = read_pending(self.run_dir)
        self._warned = False
        self._last_retry = 0.0
        self._queue: queue.Queue = queue.Queue()
        self._monitor = None
        self.client = None
        try:
            from mlflow.tracking import MlflowClient

            check_tracking_server(self.uri)
            self.client = MlflowClient(tracking_uri=self.uri)
            if self.run_id:
                self.run_id = self.client.get_run(self.run_id).info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                exp_id = get_or_create_experiment(self.client, cfg.experiment, work_dir, self.uri)
                self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            first = str(exc).splitlines()[0] if str(exc) else ""
            self._warn(
                f"cannot reach the MLflow tracking store at {self.uri} ({type(exc).__name__}: "
                f"{first}); training continues, tracking records are kept in "
                f"{self.run_dir / PENDING_FILE} for `ganforge tracking sync {self.run_dir}`"
            )
            self.client = None
            if not self.run_id:  # the run is created when the records are synced
                self._pending.append(
                    {
                        "op": "create_run",
                        "experiment": cfg.experiment,
                        "run_name": run_name,
                        "work_dir": str(Path(work_dir).resolve()),
                        "start_time": int(time.time() * 1000),
                    }
                )
            elif resuming:
                self._pending.append({"op": "set_status", "status": "RUNNING"})
            self._last_retry = time.monotonic()
        write_run_file(
            self.run_dir,
            {
                "run_id": self.run_id,
                "local_id": self.local_id,
                "tracking_uri": self.uri,
                "writer": writer_id(),  # `tracking sync` waits for this process to end
            },
        )
        if self._pending:  # earlier records (or this start) first, in order
            self._pending = [self._stamp(r) for r in self._pending]
            self._save_pending()
            if self.client is not None:
                self._retry_pending(force=True)
        if self.client is not None and cfg.system_metrics:
            self._start_system_metrics(resuming)
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._thread.start()

    # -- public API (non-blocking) ------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while records are being kept (sent now, or pending for `tracking sync`)."""
        return True

    def log_params(self, params: dict[str, Any]) -> None:
        items = [{"key": k, "value": str(v)[:6000]} for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self._submit({"op": "log_batch", "params": items[i : i + 100]})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._submit(
            {"op": "log_batch", "tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [
            {"key": k, "value": float(v), "timestamp": now, "step": int(step)}
            for k, v in metrics.items()
        ]
        for i in range(0, len(items), 1000):
            self._submit({"op": "log_batch", "metrics": items[i : i + 1000]})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._submit(
            {
                "op": "log_artifact",
                "path": str(Path(path).resolve()),
                "artifact_path": artifact_path,
            }
        )

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self.log_artifact(folder, artifact_path)

    def log_checkpoint(self, folder: str | Path) -> None:
        """Upload a checkpoint folder as ``checkpoints/<name>/`` if ``tracking.log_checkpoints``."""
        if self.cfg.log_checkpoints:
            self.log_artifact(folder, f"checkpoints/{Path(folder).name}")

    def log_image(self, path: str | Path, key: str, step: int) -> None:
        """A saved image (PNG) as a time-stepped MLflow image: the UI's image slider by step."""
        self._submit(
            {
                "op": "log_image",
                "path": str(Path(path).resolve()),
                "key": key,
                "step": int(step),
                "timestamp": int(time.time() * 1000),
            }
        )

    def log_input(self, manifest_dir: str | Path, *, name: str, digest: str) -> None:
        """The training dataset as a run input (manifest as source, its sha256 as digest)."""
        self._submit(dataset_record(manifest_dir, name, digest, context="training"))

    STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "diverged": "FAILED"}

    def close(self, status: str = "FINISHED", timeout: float = 60.0) -> None:
        """Flush (bounded by ``timeout``), retry what failed once more, end the run; what still
        could not be sent stays in the pending file. ``status``: the training outcome
        (finished / interrupted / diverged) or an MLflow status (FINISHED / KILLED / FAILED)."""
        status = self.STATUS.get(status, status.upper())
        self._finish_monitor()
        self._submit({"op": "set_status", "status": status, "end_time": int(time.time() * 1000)})
        self._queue.put(None)
        self._thread.join(timeout)
        with self._lock:
            if self._thread.is_alive():  # still working: keep what it has not finished yet
                if self._inflight is not None:  # may arrive after all: sync skips it then
                    self._pending.append(self._inflight)
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        self._pending.append(item)
                self._queue.put(None)  # the worker ends after its current call
                self._closed = True
                self._save_pending()
            elif self._pending:
                self._retry_pending(force=True, locked=True)
            n = len(self._pending)
        try:
            write_run_file(self.run_dir, {**read_run_file(self.run_dir), "writer": None})
        except OSError:
            pass
        if n:
            print(
                f"ganforge: {n} MLflow operations could not be sent; they are kept in "
                f"{self.run_dir / PENDING_FILE}: run `ganforge tracking sync {self.run_dir}` "
                f"once the server is back (metrics also in {self.run_dir / 'metrics.jsonl'})",
                file=sys.stderr,
            )

    # -- internals ----------------------------------------------------------------------------
    _closed = False
    _inflight: dict | None = None

    def _stamp(self, record: dict) -> dict:
        record.setdefault("v", RECORD_VERSION)
        record.setdefault("run", self.run_id or f"local:{self.local_id}")
        return record

    def _submit(self, record: dict) -> None:
        self._queue.put(self._stamp(record))

    def _save_pending(self) -> None:
        try:
            write_pending(self.run_dir, self._pending)
        except OSError as exc:
            self._warn(f"cannot write {self.run_dir / PENDING_FILE} ({exc})")

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            with self._lock:
                if self._closed:  # close() gave up waiting and saved the queue itself
                    self._pending.append(item)
                    self._save_pending()
                    continue
                if self._pending or self.client is None:
                    # the store is failing: queue behind the failed records (order is kept) and
                    # try again at most every RETRY_SECONDS, so a dead server costs no time per call
                    self._pending.append(item)
                    self._save_pending()
                    self._retry_pending(locked=True)
                    continue
                self._inflight = item
            try:
                from .tracking_sync import apply_record

                apply_record(self.client, self.run_id, item)
            except Exception as exc:  # noqa: BLE001
                with self._lock:
                    self._inflight = None
                    if self._closed:
                        continue  # close() already saved it
                    self._pending.append(item)
                    self._save_pending()
                    self._last_retry = time.monotonic()
                self._warn(
                    f"MLflow logging failed ({type(exc).__name__}); training continues, "
                    f"failed operations are retried every {self.RETRY_SECONDS:.0f} s and kept "
                    f"in {self.run_dir / PENDING_FILE}"
                )
            else:
                with self._lock:
                    self._inflight = None

    def _retry_pending(self, force: bool = False, locked: bool = False) -> None:
        if not locked:
            with self._lock:
                return self._retry_pending(force, locked=True)
        if not self._pending or (
            not force and time.monotonic() - self._last_retry < self.RETRY_SECONDS
        ):
            return
        self._last_retry = time.monotonic()
        from .tracking_sync import sync_records

        before = len(self._pending)
        try:
            self._pending = sync_records(self._pending, run_dir=self.run_dir, uri=self.uri)
        except Exception:  # noqa: BLE001 - still unreachable: keep everything, try later
            return
        finally:
            if len(self._pending) != before:
                self._save_pending()
        if self.client is None and not self._pending:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.uri)
            self.run_id = read_run_file(self.run_dir).get("run_id") or self.run_id
        if before and not self._pending:
            print("ganforge: MLflow is reachable again; delayed logs were sent", file=sys.stderr)

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"ganforge: warning: {message}", file=sys.stderr)

    def _start_system_metrics(self, resuming: bool) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id, resume_logging=resuming, tracking_uri=self.uri
            )
            self._monitor.start()
        except Exception as exc:  # noqa: BLE001
            self._monitor = None
            self._warn(f"system metrics unavailable ({exc}); install psutil (and pynvml on GPUs)")

    def _finish_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        # finish() joins the sampling thread and flushes; against a dead server that could take
        # MLflow's whole retry budget, so it gets a bounded helper thread
        done = threading.Thread(target=monitor.finish, name="mlflow-system-metrics", daemon=True)
        done.start()
        done.join(15.0)
