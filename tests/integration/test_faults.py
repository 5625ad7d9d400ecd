"""Faults reproduced the way the fault probe (issue 16) found them, with the commands users run:
SIGTERM a registering run, truncate the newest checkpoint, resume from a corrupt path, leave
a killed save's temp folder behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides
from tests.integration.test_distributed import sigterm_after_first_tick

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
EXIT_INTERRUPTED = 75


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("GANFORGE_DEBUG", None)
    return env


def _args(work: Path, manifest: Path, *extra_args: str, **overrides) -> list[str]:
    args = ["train", "--preset", "digits", *extra_args]
    for item in tiny_overrides(work, manifest, **overrides):
        args += ["--set", item]
    return args


def _run(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)


def test_sigterm_registers_nothing_marks_killed_and_resumes_the_same_run(tmp_path, digits_shards):
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    tracked = {
        "tracking.enabled": True,
        "tracking.register": True,
        "tracking.system_metrics": False,
        "tracking.model_name": "faults-gan",
        "train.checkpoint_ticks": 0,
    }
    proc, out, err = sigterm_after_first_tick(
        _args(work, digits_shards, **tracked, **{"train.total_kimg": 20}),
        work / "runs/digits/metrics.jsonl",
        env=_env(),
        wait=240,
        poll=0.2,
        timeout=180,
    )
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "registered" not in out and "run the same command again" in err
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ganforge-digits").experiment_id])
    assert run.info.status == "KILLED"
    assert client.search_model_versions("name='faults-gan'") == []
    run_file = json.loads((work / "runs/digits/mlflow-run.json").read_text())
    assert run_file["run_id"] == run.info.run_id

    state = json.loads(
        sorted((work / "runs/digits/checkpoints").glob("ckpt-*"))[-1]
        .joinpath("state.json")
        .read_text()
    )
    # the same command (shorter total for the test) resumes into the same MLflow run and
    # registers once finished
    done = _run(
        _args(
            work,
            digits_shards,
            **tracked,
            **{"train.total_kimg": state["images_seen"] / 1000 + 0.016},
        )
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout and "registered" in done.stdout
    (again,) = client.search_runs([client.get_experiment_by_name("ganforge-digits").experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    (version,) = client.search_model_versions("name='faults-gan'")
    assert version.run_id == run.info.run_id


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_shards) -> Path:
    """A finished 32-image run with checkpoints at 16 and 32 images."""
    work = tmp_path_factory.mktemp("faults")
    proc = _run(_args(work, digits_shards))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path, trained, digits_shards):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    ckpts = work / "runs/digits/checkpoints"
    _truncate(ckpts / "ckpt-000000000032/models.safetensors")
    proc = _run(_args(work, digits_shards, **{"train.total_kimg": 0.048}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipping corrupt checkpoint ckpt-000000000032" in proc.stderr
    assert "models.safetensors" in proc.stderr and "Traceback" not in proc.stderr
    assert f"resumed from {ckpts / 'ckpt-000000000016'}" in proc.stdout
    assert (ckpts / "ckpt-000000000048").is_dir()


@pytest.mark.parametrize("name", ["models.safetensors", "optim.pt", "state.json"])
def test_explicit_corrupt_resume_is_one_line(tmp_path, trained, digits_shards, name):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    bad = work / "runs/digits/checkpoints/ckpt-000000000032"
    _truncate(bad / name)
    proc = _run(_args(work, digits_shards, "--resume", str(bad), **{"train.total_kimg": 0.048}))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert str(bad / name) in lines[0] and "truncated" in lines[0]


def test_temp_folder_of_a_killed_save_is_removed(tmp_path, trained, digits_shards):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    ckpts = work / "runs/digits/checkpoints"
    # what a kill during save leaves: a half-written temp folder (and DeepSpeed's staging one)
    stale = ckpts / ".tmp-ckpt-000000000048-k1ll3d"
    shutil.copytree(ckpts / "ckpt-000000000032", stale)
    _truncate(stale / "models.safetensors")
    (ckpts / ".staging-ckpt-000000000048/deepspeed").mkdir(parents=True)
    proc = _run(_args(work, digits_shards, **{"train.total_kimg": 0.048}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "ckpt-000000000016",
        "ckpt-000000000032",
        "ckpt-000000000048",
    ]
