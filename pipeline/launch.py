"""The train stage of ``ganforge run`` on several local processes.

``ganforge run --processes N`` trains with N processes on this machine, typically one per GPU. The
processes are started by ``torch.distributed.run --standalone`` (a free rendezvous port, no
config file) and each runs ``pipeline.cli train`` on the resolved config: the same trainer,
resume and MLflow run as ``accelerate launch``. The main process writes the outcome as JSON
(``train --result-json``), which ``run`` reads back to register and generate.

``auto``: the GPU count, lowered to a count that divides ``train.batch``; 1 under a launcher that
already started several processes (WORLD_SIZE > 1) and 1 on a GPU-less machine: there, two
processes with one thread each train the ``digits`` preset no faster than one process with two
threads (13.2 vs 13.1 s/kimg on 2 cores, docs/benchmarks.md), and cost the start of a second
interpreter. ``--processes 2`` still does it, e.g. to exercise a multi-process run on a laptop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import RunConfig
    from training.trainer import TrainResult


def resolve_processes(spec: str | int, cfg: RunConfig) -> int:
    """``auto`` or a positive count -> the number of processes to train with."""
    text = str(spec).strip().lower()
    if text != "auto":
        try:
            count = int(text)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"--processes: expected auto or a positive integer, got {spec!r}")
        return count
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1  # already one of several launched processes
    import torch

    if not torch.cuda.is_available():
        return 1
    count = max(1, min(torch.cuda.device_count(), cfg.train.batch))
    while cfg.train.batch % count:
        count -= 1
    return count


def result_to_json(result: TrainResult) -> str:
    data = asdict(result)
    for key in ("run_dir", "export_dir", "last_checkpoint", "grid_path"):
        data[key] = None if data[key] is None else str(data[key])
    return json.dumps(data, indent=2, sort_keys=True)


def result_from_json(text: str) -> TrainResult:
    from training.trainer import TrainResult

    data = json.loads(text)
    for key in ("run_dir", "export_dir", "last_checkpoint", "grid_path"):
        data[key] = None if data[key] is None else Path(data[key])
    return TrainResult(**data)


def train_processes(cfg: RunConfig, processes: int) -> TrainResult:
    """Train ``cfg`` with ``processes`` local processes; -> the main process's TrainResult.

    SIGINT/SIGTERM are passed on to the launcher, which passes them to every process: they save
    a checkpoint and stop, as a single-process run does (the result says ``interrupted``)."""
    from pipeline.config import save_config

    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".launch-", dir=work) as tmp:
        config_path, result_path = Path(tmp) / "config.yaml", Path(tmp) / "result.json"
        save_config(cfg, config_path)
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "pipeline.cli",
            "train",
            "--preset",
            str(config_path),
            "--no-register",
            "--result-json",
            str(result_path),
        ]
        env = dict(os.environ)
        if "OMP_NUM_THREADS" not in env:  # the cores shared out, not one each by default
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            env["OMP_NUM_THREADS"] = str(max(1, cores // processes))
        # its own session: a terminal's Ctrl-C reaches the processes once, through us
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        previous = {
            sig: signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            code = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if result_path.is_file():
            return result_from_json(result_path.read_text())
        if code == 2:  # the processes printed the user error (one line) already
            raise ValueError(f"training with {processes} processes stopped on the error above")
        raise RuntimeError(
            f"training with {processes} processes failed (exit code {code}) before writing its "
            f"result; see the messages above. Re-run the same command to resume, or "
            f"--processes 1 to train in this process"
        )
