"""Real multi-process training on CPU with gloo, launched exactly as docs/README say.

- 2 processes == 1 process (same global batch, seed), ADA on, 100 steps: bit-identical weights.
- SIGTERM on 1 process + resume on 2, 100 steps with ADA: bit-identical to an uninterrupted run.
- Two "nodes" on localhost (machine rank 0 and 1, one process each) train and checkpoint.
- A run saved with 2 processes resumes with 1, and the reverse.
- SIGTERM: checkpoint, clean exit, and the same command resumes to the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_overrides
from training.checkpoint import latest_checkpoint

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _train_args(work: Path, manifest: Path, **extra) -> list[str]:
    args = ["train", "--preset", "digits"]
    for item in tiny_overrides(work, manifest, **extra):
        args += ["--set", item]
    return args


def accelerate_cmd(nproc: int, port: int, *, machines: int = 1, machine_rank: int = 0) -> list[str]:
    """Exactly the README's launch lines: configs/cpu-2proc.yaml on one machine, the repo's
    accelerate_config.yaml multi-node template (with its command-line overrides) for several."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if machines == 1:
        cmd = launch + [
            "--config_file",
            str(ROOT / "configs/cpu-2proc.yaml"),
            "--num_processes",
            str(nproc),
            "--main_process_port",
            str(port),
        ]
    else:
        cmd = launch + [
            "--config_file",
            str(ROOT / "accelerate_config.yaml"),
            "--num_machines",
            str(machines),
            "--num_processes",
            str(nproc),
            "--machine_rank",
            str(machine_rank),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(port),
        ]
    return cmd + ["-m", "pipeline.cli"]


def run_launch(nproc: int, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "pipeline.cli"]
    else:
        cmd = accelerate_cmd(nproc, _port())
    proc = subprocess.run(
        cmd + args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def start_cli(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """``python -m pipeline.cli ARGS`` in the background from the repo root (text pipes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sigterm_after_first_tick(
    args: list[str],
    metrics: Path,
    *,
    env: dict | None = None,
    wait: float = 180,
    poll: float = 0.1,
    timeout: float = 120,
) -> tuple[subprocess.Popen, str, str]:
    """Start a training command, SIGTERM it once its first tick wrote ``metrics`` (a failure
    before that shows its stderr) -> (process, stdout, stderr) after it exited."""
    proc = start_cli(args, env)
    deadline = time.time() + wait
    while not metrics.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(poll)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc, out, err


def _final(run_dir: Path) -> tuple[dict, dict]:
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    return load_file(str(ckpt / "models.safetensors")), json.loads(
        (ckpt / "state.json").read_text()
    )


DETERMINISTIC = {  # also used by test_deepspeed.py
    "data.loader": "deterministic",
    "augment.mode": "fixed",
    "augment.p": 0.3,
    "loss.r1_interval": 2,
    "train.total_kimg": 0.032,
}

# 100 steps of batch 8 with ADA moving p, lazy R1 and the path-length regulariser
ADA_100_STEPS = {
    "data.loader": "deterministic",
    "augment.mode": "ada",
    "augment.ada_kimg": 0.5,
    "loss.r1_interval": 4,
    "loss.pl_weight": 1.0,
    "loss.pl_interval": 4,
    "train.batch_per_device": 4,
    "train.total_kimg": 0.8,
    "train.tick_kimg": 0.08,
    "train.snapshot_ticks": 0,
    "train.checkpoint_ticks": 0,
}


def _assert_identical(run_a: Path, run_b: Path, images: int) -> tuple[dict, dict]:
    (wa, sa), (wb, sb) = _final(run_a), _final(run_b)
    assert sa["images_seen"] == sb["images_seen"] == images
    assert sa["ada"]["p"] == sb["ada"]["p"] and sa["ada"]["p"] > 0  # ADA moved p
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    return sa, sb


def test_two_processes_match_one_process(tmp_path, digits_shards):
    # same global batch 8: one process runs 2 micro-batches of 4, two processes 1 each
    run_launch(1, _train_args(tmp_path / "one", digits_shards, **ADA_100_STEPS))
    proc = run_launch(2, _train_args(tmp_path / "two", digits_shards, **ADA_100_STEPS))
    assert "2 process(es)" in proc.stdout
    s1, s2 = _assert_identical(tmp_path / "one/runs/digits", tmp_path / "two/runs/digits", 800)
    assert s1["world_size"] == 1 and s2["world_size"] == 2 and s1["step"] == 100


def test_sigterm_then_resume_on_two_processes_is_exact(tmp_path, digits_shards):
    run_launch(1, _train_args(tmp_path / "straight", digits_shards, **ADA_100_STEPS))
    args = _train_args(tmp_path / "cut", digits_shards, **ADA_100_STEPS)
    proc, out, err = sigterm_after_first_tick(args, tmp_path / "cut/runs/digits/metrics.jsonl")
    assert proc.returncode == 75 and "SIGTERM received" in out, err[-3000:]  # interrupted
    _, cut = _final(tmp_path / "cut/runs/digits")
    assert 0 < cut["images_seen"] < 800
    resumed = run_launch(2, args)
    assert "saved with world size 1, now 2" in resumed.stdout
    _assert_identical(tmp_path / "straight/runs/digits", tmp_path / "cut/runs/digits", 800)


def test_two_nodes_on_localhost(tmp_path, digits_shards):
    port = _port()
    args = _train_args(tmp_path, digits_shards, **{"train.total_kimg": 0.016})
    procs = [
        subprocess.Popen(
            accelerate_cmd(2, port, machines=2, machine_rank=r) + args,
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    _, state = _final(tmp_path / "runs/digits")
    assert state["world_size"] == 2 and state["images_seen"] == 16
    assert (
        len(list((tmp_path / "runs/digits/checkpoints").glob("ckpt-*"))) == 1
    )  # rank 0 only wrote it


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_resume_on_a_different_world_size(tmp_path, digits_shards, first, second):
    run_launch(first, _train_args(tmp_path, digits_shards, **{"train.total_kimg": 0.016}))
    proc = run_launch(second, _train_args(tmp_path, digits_shards, **{"train.total_kimg": 0.032}))
    assert f"saved with world size {first}, now {second}" in proc.stdout
    _, state = _final(tmp_path / "runs/digits")
    assert state["images_seen"] == 32 and state["world_size"] == second


def test_sigterm_checkpoints_and_resumes(tmp_path, digits_shards):
    args = _train_args(
        tmp_path, digits_shards, **{"train.total_kimg": 20, "train.checkpoint_ticks": 0}
    )
    proc, out, err = sigterm_after_first_tick(
        args, tmp_path / "runs/digits/metrics.jsonl", poll=0.2
    )
    assert proc.returncode == 75, err[-3000:]  # interrupted: "run me again" (docs/failure-modes.md)
    assert "SIGTERM received" in out
    _, state = _final(tmp_path / "runs/digits")
    assert 0 < state["images_seen"] < 20000
    # the same command (shorter total for the test) resumes from there
    resumed = run_launch(
        1,
        _train_args(
            tmp_path, digits_shards, **{"train.total_kimg": state["images_seen"] / 1000 + 0.016}
        ),
    )
    assert "resumed from" in resumed.stdout
