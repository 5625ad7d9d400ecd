"""The stages of ``ganforge run``, for generators (``run.py``) and translators
(``run_translation.py``) alike: tracking check, [1/4] prep, [2/4] train, [3/4] register,
[4/4] deliver, summary. What differs between the two kinds of model (prep of one or two
domains; a grid of samples or of before/after pairs) is passed in as the ``prep`` and ``deliver``
stages. Registration is also what ``ganforge train`` does with ``tracking.register=true``.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .common import EXIT_DIVERGED, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from deploy.registry import ModelVersionInfo
    from pipeline.config import RunConfig
    from training.trainer import TrainResult


def run_pipeline(
    cfg: RunConfig,
    *,
    prep: Callable[[RunConfig], tuple[RunConfig, str]],
    deliver: Callable[[RunConfig, str, str], list[str]],
    use: str,
    processes: str | int = 1,
) -> int:
    """Run the stages; -> the exit code. ``prep(cfg) -> (cfg to train, summary line of the data)``
    prints [1/4]; ``deliver(cfg, model_uri, tracking_uri) -> summary lines of what it wrote``
    prints [4/4]; ``use``: what deliver does with the model (for the tracking-off message);
    ``processes``: ``auto`` or the number of local training processes (pipeline/launch.py)."""
    started = time.time()
    uri = checked_tracking_uri(cfg)
    cfg, inputs = prep(cfg)
    result = train_stage(cfg, processes)
    if (code := unfinished_exit_code(result)) is not None:
        return code
    model_uri = register_stage(cfg, result, uri, use=use)
    outputs = deliver(cfg, model_uri, uri)
    print_summary(
        cfg, result, started=started, uri=uri, model_uri=model_uri, inputs=inputs, outputs=outputs
    )
    return 0


def checked_tracking_uri(cfg: RunConfig) -> str:
    """The run's tracking URI; with tracking on, a dead server fails now (in seconds), not at the
    registration stage after training."""
    from training.tracking import check_tracking_server, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
    if cfg.tracking.enabled:
        check_tracking_server(uri)
    return uri


def train_stage(cfg: RunConfig, processes: str | int = 1) -> TrainResult:
    """[2/4] train (resumes a run that stopped; a finished one is reused), in this process or
    in ``processes`` local ones."""
    from pipeline.launch import resolve_processes, train_processes

    count = resolve_processes(processes, cfg)
    where = f", {count} processes" if count > 1 else ""
    print(f"[2/4] train: {cfg.model.family}, {cfg.train.total_kimg:g} kimg{where}", flush=True)
    if count > 1:
        return train_processes(cfg, count)
    from pipeline.config import config_to_yaml
    from training.trainer import train

    return train(cfg, config_yaml=config_to_yaml(cfg))


def unfinished_exit_code(result: TrainResult) -> int | None:
    """None when training finished with an export; else says so and returns the exit code."""
    if result.status == "finished" and result.export_dir is not None:
        return None
    print(f"training {result.status}; re-run the same command to resume")
    return EXIT_DIVERGED if result.status == "diverged" else EXIT_INTERRUPTED


def register(cfg: RunConfig, result: TrainResult, uri: str) -> ModelVersionInfo:
    """The run's export in the Model Registry as ``tracking.model_name`` (+ ``tracking.alias``),
    linked to its MLflow run."""
    from deploy.registry import register_export

    return register_export(
        result.export_dir,
        model_name=cfg.tracking.model_name,
        alias=cfg.tracking.alias,
        tracking_uri=uri,
        run_id=result.mlflow_run_id,
    )


def register_stage(cfg: RunConfig, result: TrainResult, uri: str, *, use: str) -> str:
    """[3/4] register; -> the model URI the last stage loads (the local export when tracking is
    off). ``use``: what that stage does with the model, for the tracking-off message."""
    print(f"[3/4] register: {cfg.tracking.model_name} @ {cfg.tracking.alias}", flush=True)
    if not cfg.tracking.enabled:
        print(f"      tracking.enabled=false: {use} the local export instead")
        return str(result.export_dir)
    info = register(cfg, result, uri)
    return f"models:/{info.name}@{cfg.tracking.alias}" if cfg.tracking.alias else info.uri


def print_summary(
    cfg: RunConfig,
    result: TrainResult,
    *,
    started: float,
    uri: str,
    model_uri: str,
    inputs: str,
    outputs: Sequence[str],
) -> None:
    """The closing block: time, the data (``inputs``), the run, the model, the quality metrics,
    what the last stage wrote (``outputs``) and how to open the MLflow UI."""
    ui = (
        f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
        if uri.startswith(("sqlite:", "file:"))
        else f"open {uri} in a browser"
    )
    print()
    print(f"ganforge run finished in {time.time() - started:.0f} s")
    print(inputs)
    print(
        f"  run:          {result.run_dir} ({result.images_seen / 1000:.1f} kimg, checkpoints/, export/, samples/)"
    )
    print(
        f"  mlflow run:   {result.mlflow_run_id} in experiment {cfg.tracking.experiment!r} at {uri}"
    )
    print(f"  model:        {model_uri}")
    if result.export_dir is not None and result.export_dir.name == "export-best":
        print(
            f"  snapshot:     {result.export_dir} (eval.use_best: the best by "
            f"{cfg.eval.keep_best}; the final G is in export/)"
        )
    evals = {k.split("/", 1)[1]: v for k, v in result.metrics.items() if k.startswith("metrics/")}
    if evals:
        note = (
            " (coverage: share of the 10 digit classes the generator produces; 1.0 = no mode collapse)"
            if "coverage" in evals
            else ""
        )
        print(
            "  quality:      " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(evals.items())) + note
        )
    for line in outputs:
        print(line)
    print(f"  open the UI:  {ui}")
