"""Real multi-process training on CPU with gloo, launched exactly as docs/README say.

- 2 processes == 1 process (same global batch, seed): identical parameters to float tolerance.
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


def _final(run_dir: Path) -> tuple[dict, dict]:
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    return load_file(str(ckpt / "models.safetensors")), json.loads(
        (ckpt / "state.json").read_text()
    )


DETERMINISTIC = {
    "data.loader": "deterministic",
    "augment.mode": "fixed",
    "augment.p": 0.3,
    "loss.r1_interval": 2,
    "train.total_kimg": 0.032,
}


def test_two_processes_match_one_process(tmp_path, digits_shards):
    # same global batch 8: one process runs 2 micro-batches of 4, two processes 1 each
    run_launch(
        1,
        _train_args(
            tmp_path / "one", digits_shards, **DETERMINISTIC, **{"train.batch_per_device": 4}
        ),
    )
    proc = run_launch(2, _train_args(tmp_path / "two", digits_shards, **DETERMINISTIC))
    assert "2 process(es)" in proc.stdout
    (w1, s1), (w2, s2) = _final(tmp_path / "one/runs/digits"), _final(tmp_path / "two/runs/digits")
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    assert s1["images_seen"] == s2["images_seen"] == 32
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-4, atol=1e-5, msg=key)


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "runs/digits/metrics.jsonl"
    deadline = time.time() + 180
    while not metrics.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
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
