"""configs/slurm/train.sbatch, run as SLURM would (stand-ins for `srun` and `scontrol` on PATH,
the real `accelerate launch` with 2 processes): SIGTERM to every process of the job step (what
`--signal=TERM@300` does) makes the job requeue itself; the requeued job resumes and finishes
without requeueing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from tests.integration.test_distributed import _env, _port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

FAKE_SRUN = """#!/bin/bash
# stand-in for srun: one task (this node), in its own process group, as a job step
while [[ "$1" == --* ]]; do shift; done
echo $$ > "$STEP_PIDFILE"
exec setsid "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
case "$1" in
  show) echo localhost ;;
  requeue) echo "requeue $2" >> "$SCONTROL_LOG" ;;
esac
"""


def _sbatch(tmp_path: Path, manifest: Path, **overrides) -> subprocess.Popen:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = _env()
    env.update(
        PATH=f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}",
        STEP_PIDFILE=str(tmp_path / "step.pid"),
        SCONTROL_LOG=str(tmp_path / "scontrol.log"),
        SLURM_JOB_ID="4242",
        SLURM_JOB_NODELIST="localhost",
        SLURM_NNODES="1",
        SLURM_NODEID="0",
        SLURM_GPUS_ON_NODE="2",
        MAIN_PORT=str(_port()),
    )
    (tmp_path / "step.pid").unlink(missing_ok=True)
    return subprocess.Popen(
        ["bash", str(ROOT / "configs/slurm/train.sbatch"), "digits"]
        + tiny_overrides(tmp_path / "work", manifest, **overrides),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_time_limit_signal_requeues_and_the_requeued_job_resumes(tmp_path, digits_shards):
    job = _sbatch(tmp_path, digits_shards, **{"train.total_kimg": 20, "train.checkpoint_ticks": 0})
    metrics = tmp_path / "work/runs/digits/metrics.jsonl"
    deadline = time.time() + 300
    while not metrics.exists() and time.time() < deadline:
        assert job.poll() is None, job.communicate()
        time.sleep(0.2)
    step = int((tmp_path / "step.pid").read_text())
    os.killpg(step, signal.SIGTERM)  # SLURM: the signal to every process of the step
    out, err = job.communicate(timeout=300)
    assert job.returncode == 75, out[-2000:] + err[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    # ours, not the launcher's (torchrun's own lines about the signal vary with timing)
    assert "run the same command again to resume (exit code 75)" in err
    assert list((tmp_path / "work/runs/digits/checkpoints").glob("ckpt-*"))

    (tmp_path / "scontrol.log").unlink()
    rerun = _sbatch(tmp_path, digits_shards, **{"train.total_kimg": 0.048})
    out, err = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out[-2000:] + err[-3000:]
    assert "resumed from" in out
    assert not (tmp_path / "scontrol.log").exists()
