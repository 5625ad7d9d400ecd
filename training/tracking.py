"""MLflow tracking for training runs, from the main process only, never fatal.

All MLflow calls run on a background thread, so a slow or dead tracking server never stalls a
training step. When a call fails, the tracker says so once, keeps the operation, and retries it
later (and at the end); whatever still could not be sent is written to
``<run_dir>/tracking-pending.jsonl`` so nothing is lost (metrics are also always appended to
``<run_dir>/metrics.jsonl`` by the trainer).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    system_metrics: bool = False
    """Log CPU/GPU utilisation through MLflow's system-metrics monitor (needs psutil/pynvml)."""
    register: bool = False
    """Register the exported generator in the Model Registry at the end of training."""
    model_name: str = "ganforge-generator"
    """Registered model name."""
    alias: str | None = "champion"
    """Alias set on the new version when registering (None: no alias)."""

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ValueError("experiment: must not be empty")
        if not self.model_name:
            raise ValueError("model_name: must not be empty")


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


def get_or_create_experiment(
    client: Any, name: str, work_dir: str | Path, tracking_uri: str
) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # A local (sqlite/file) store would otherwise put artifacts in ./mlruns of the cwd.
    local = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    return client.create_experiment(
        name, artifact_location=artifact_root(work_dir) if local else None
    )


class Tracker:
    """Asynchronous, failure-tolerant MLflow logging for one run (main process only)."""

    RETRY_SECONDS = 30.0

    def __init__(
        self,
        cfg: TrackingConfig,
        *,
        work_dir: str | Path,
        run_dir: str | Path,
        run_name: str,
        resume_run_id: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.uri = resolve_tracking_uri(cfg, work_dir)
        self.run_id: str | None = None
        self._pending: list[tuple[str, tuple, dict]] = []
        self._warned = False
        self._last_retry = 0.0
        self._queue: queue.Queue = queue.Queue()
        self._monitor = None
        # Fail fast against a dead server instead of MLflow's minutes of backoff.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.uri)
            if resume_run_id:
                self.run_id = self.client.get_run(resume_run_id).info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                exp_id = get_or_create_experiment(self.client, cfg.experiment, work_dir, self.uri)
                self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn(
                f"cannot reach the MLflow tracking store at {self.uri} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); training continues without "
                f"MLflow, metrics stay in {self.run_dir / 'metrics.jsonl'}"
            )
            self.client = None
        if self.client is not None and cfg.system_metrics:
            self._start_system_metrics()
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._thread.start()

    # -- public API (non-blocking) ------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.client is not None and self.run_id is not None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self._submit("log_batch", params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._submit("log_batch", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        self._submit("log_batch", metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._submit("log_artifact", str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self._submit("log_artifacts", str(folder), artifact_path)

    def close(self, status: str = "FINISHED", timeout: float = 60.0) -> None:
        """Flush (bounded by ``timeout``), retry what failed once more, end the run."""
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception:  # noqa: BLE001
                pass
        self._submit("set_terminated", status=status)
        self._queue.put(None)
        self._thread.join(timeout)
        if self._pending and not self._thread.is_alive():
            self._retry_pending(force=True)
        if self._pending:
            path = self.run_dir / "tracking-pending.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                for method, args, kwargs in self._pending:
                    f.write(
                        json.dumps(
                            {
                                "method": method,
                                "args": [str(a) for a in args],
                                "kwargs": {k: str(v) for k, v in kwargs.items()},
                            }
                        )
                        + "\n"
                    )
            print(
                f"ganforge: {len(self._pending)} MLflow operations could not be sent; they are "
                f"recorded in {path} (metrics also in {self.run_dir / 'metrics.jsonl'})",
                file=sys.stderr,
            )

    # -- internals ----------------------------------------------------------------------------
    def _submit(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.client is None or self.run_id is None:
            return
        self._queue.put((method, args, kwargs))

    def _call(self, method: str, args: tuple, kwargs: dict) -> None:
        getattr(self.client, method)(self.run_id, *args, **kwargs)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._pending:
                # the store is failing: queue behind the failed operations (order is kept) and
                # try again at most every RETRY_SECONDS, so a dead server costs no time per call
                self._pending.append(item)
                self._retry_pending()
                continue
            try:
                self._call(*item)
            except Exception as exc:  # noqa: BLE001
                self._pending.append(item)
                self._last_retry = time.monotonic()
                self._warn(
                    f"MLflow logging failed ({type(exc).__name__}); training continues, "
                    f"failed operations are retried every {self.RETRY_SECONDS:.0f} s and kept locally"
                )

    def _retry_pending(self, force: bool = False) -> None:
        if not self._pending or (
            not force and time.monotonic() - self._last_retry < self.RETRY_SECONDS
        ):
            return
        self._last_retry = time.monotonic()
        still = []
        for i, (method, args, kwargs) in enumerate(self._pending):
            try:
                self._call(method, args, kwargs)
            except Exception:  # noqa: BLE001
                still = self._pending[i:]
                break
        if len(still) < len(self._pending) and not still:
            print("ganforge: MLflow is reachable again; delayed logs were sent", file=sys.stderr)
        self._pending = still

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"ganforge: warning: {message}", file=sys.stderr)

    def _start_system_metrics(self) -> None:
        try:
            import mlflow
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            mlflow.set_tracking_uri(self.uri)  # the monitor logs through the fluent client
            self._monitor = SystemMetricsMonitor(self.run_id, resume_logging=False)
            self._monitor.start()
        except Exception as exc:  # noqa: BLE001
            self._warn(f"system metrics unavailable ({exc}); install psutil (and pynvml on GPUs)")
