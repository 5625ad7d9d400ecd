"""CycleGAN on the real trainer, launched as the README says: 2 processes == 1 process,
SIGTERM + resume on another world size is exact (networks, optimizers and both image pools)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import prep_demo_domains
from tests.integration.test_distributed import (
    _final,
    run_launch,
    sigterm_after_first_tick,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> list[str]:
    return prep_demo_domains(tmp_path_factory.mktemp("cyclegan-domains"), shard_samples=24)


def _args(work: Path, domains: list[str], **extra) -> list[str]:
    # 12 steps of 4 images: the pools (3 images) fill in the first step and swap afterwards
    values = {
        "work_dir": str(work),
        "cyclegan.domains": f"[{domains[0]},{domains[1]}]",
        "cyclegan.networks.ngf": 4,
        "cyclegan.networks.ndf": 4,
        "cyclegan.networks.n_blocks": 1,
        "cyclegan.pool_size": 3,
        "data.loader": "deterministic",
        "data.num_workers": 0,
        "data.shuffle_buffer": 16,
        "train.batch": 4,
        "train.batch_per_device": 2,
        "train.total_kimg": 0.048,
        "train.tick_kimg": 0.008,
        "train.snapshot_ticks": 0,
        "train.checkpoint_ticks": 0,
        "train.grid_size": 0,
        "tracking.enabled": False,
        "tracking.register": False,
        "eval.at_end": False,
        **extra,
    }
    args = ["train", "--preset", "cyclegan-demo"]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


def _assert_identical(run_a: Path, run_b: Path) -> None:
    (wa, sa), (wb, sb) = _final(run_a), _final(run_b)
    assert sa["images_seen"] == sb["images_seen"] == 48
    assert wa.keys() == wb.keys()
    assert {"extra.pool_a.images", "extra.pool_b.images"} <= wa.keys()
    assert int(wa["extra.pool_b.count"][0]) == 3
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_two_processes_match_one_process(tmp_path, domains):
    run_launch(1, _args(tmp_path / "one", domains))
    proc = run_launch(2, _args(tmp_path / "two", domains))
    assert "2 process(es)" in proc.stdout
    _assert_identical(tmp_path / "one/runs/cyclegan-demo", tmp_path / "two/runs/cyclegan-demo")


def test_sigterm_then_resume_on_two_processes_is_exact(tmp_path, domains):
    run_launch(1, _args(tmp_path / "straight", domains))
    args = _args(tmp_path / "cut", domains, **{"train.total_kimg": 0.048})
    proc, out, err = sigterm_after_first_tick(
        args, tmp_path / "cut/runs/cyclegan-demo/metrics.jsonl", wait=300, poll=0.05, timeout=300
    )
    assert proc.returncode == 75 and "SIGTERM received" in out, err[-3000:]
    _, cut = _final(tmp_path / "cut/runs/cyclegan-demo")
    assert 0 < cut["images_seen"] < 48
    resumed = run_launch(2, args, timeout=600)
    assert "saved with world size 1, now 2" in resumed.stdout
    _assert_identical(tmp_path / "straight/runs/cyclegan-demo", tmp_path / "cut/runs/cyclegan-demo")
