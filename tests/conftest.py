"""Shared fixtures: tiny datasets and configs so every test runs on CPU in seconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Keep torch from oversubscribing the 2-core CI machine when tests spawn processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# No test may reach the network for MLflow or anything else.
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    """The built-in digits at 16x16 RGB as real WebDataset shards (shared by the session)."""
    from data_prep import shard_dataset
    from data_prep.config import PrepConfig

    out = tmp_path_factory.mktemp("digits16")
    shard_dataset(
        PrepConfig(source="digits", resolution=16, shard_samples=128, workers=1),
        out=str(out),
        progress=False,
    )
    return out


def prep_demo_domains(root: Path, shard_samples: int) -> list[str]:
    """The built-in CycleGAN demo's two domains at 32 px (one crop per cell) as real shards under
    ``root``/A and ``root``/B -> the two prep output folders."""
    from data_prep import shard_dataset
    from data_prep.config import PrepConfig
    from data_prep.translation_demo import write_demo_domains

    dirs = write_demo_domains(root / "images", size=32, per_cell=1)
    out = []
    for name, folder in zip("AB", dirs, strict=True):
        shard_dataset(
            PrepConfig(source=str(folder), resolution=32, shard_samples=shard_samples, workers=1),
            out=str(root / name),
            progress=False,
        )
        out.append(str(root / name))
    return out


def tiny_overrides(work_dir: Path, manifest: Path, **extra: object) -> list[str]:
    """Overrides that turn the digits preset into a seconds-long CPU run."""
    base = {
        "work_dir": str(work_dir),
        "data.manifest": str(manifest),
        "data.num_workers": 0,
        "data.shuffle_buffer": 64,
        "model.z_dim": 24,  # room for the digits preset's 20-way InfoGAN code
        "model.w_dim": 16,
        "model.map_depth": 2,
        "model.channel_base": 128,
        "model.channel_max": 16,
        "train.batch": 8,
        "train.total_kimg": 0.032,
        "train.tick_kimg": 0.016,
        "train.snapshot_ticks": 1,
        "train.checkpoint_ticks": 1,
        "train.grid_size": 8,
        "tracking.enabled": False,
        "tracking.register": False,
        "eval.at_end": False,
        # the digits preset's snapshot evaluations and best-snapshot result (tests that are about
        # them turn them on)
        "eval.every_kimg": 0,
        "eval.use_best": False,
        # the digits preset's schedule tricks, off unless a test is about them: a ramp-down ties
        # the learning rate to total_kimg (tests stop runs early), reused fakes exclude wgan-gp
        "loss.reuse_fakes": False,
        "train.lr_rampdown_kimg": 0,
    }
    base.update(extra)
    # the digits preset's InfoGAN code (20 values, within the tiny z_dim: runs built on the
    # preset exercise the code and the Q head) is for its own unconditional stylegan2 model
    if str(base.get("model.family", "stylegan2")) != "stylegan2" or str(
        base.get("model.conditional", False)
    ).lower() in ("true", "1"):
        base.setdefault("model.latent_classes", 0)
    return [f"{k}={v}" for k, v in base.items()]
