"""Tiny exported generators (16 px, 32 channels) shared by the deploy tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_export(
    out: Path,
    c_dim: int = 0,
    seed: int = 0,
    metrics: dict | None = None,
    latent_classes: int = 0,
) -> Path:
    import torch

    from training.networks import build_networks
    from training.networks.config import ModelConfig
    from training.networks.export import save_export

    torch.manual_seed(seed)
    cfg = ModelConfig(
        z_dim=16,
        w_dim=16,
        map_depth=2,
        channel_base=256,
        channel_max=32,
        conditional=c_dim > 0,
        latent_classes=latent_classes,
    )
    generator, _, g_kwargs, _ = build_networks(cfg, 16, 3, c_dim)
    # A non-zero w_avg and noise strength so truncation and noise modes actually matter.
    with torch.no_grad():
        generator.mapping.w_avg.normal_()
        for name, p in generator.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    meta = {
        "kimg": 12.5,
        "dataset": "digits",
        "dataset_sha256": "ab" * 32,
        "metrics": metrics or {},
    }
    return save_export(
        out,
        generator,
        family="stylegan2",
        kwargs=g_kwargs,
        class_names=[f"class{i}" for i in range(c_dim)],
        meta=meta,
    )


@pytest.fixture(scope="session")
def export_uncond(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("export-uncond"), metrics={"fid50k": 40.0})


@pytest.fixture(scope="session")
def export_latent_code(tmp_path_factory) -> Path:
    """Unconditional, with InfoGAN's 4-way code read from z (model.latent_classes)."""
    return make_export(tmp_path_factory.mktemp("export-latent"), seed=2, latent_classes=4)


@pytest.fixture(scope="session")
def export_cond(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("export-cond"), c_dim=3, seed=1)


@pytest.fixture(scope="session")
def loaded_uncond(export_uncond):
    from deploy.generator import load_generator

    return load_generator(export_uncond)


@pytest.fixture(scope="session")
def loaded_cond(export_cond):
    from deploy.generator import load_generator

    return load_generator(export_cond)


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """A local MLflow store (sqlite + artifacts next to it), like `ganforge`'s default.

    Shared by the session (creating a store runs MLflow's schema migrations, seconds each);
    tests use distinct model names.
    """
    return f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'work' / 'mlflow.db').as_posix()}"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Downloaded models go to a per-session cache, never the user's ~/.cache."""
    import os

    cache = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("GANFORGE_CACHE_DIR")
    os.environ["GANFORGE_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("GANFORGE_CACHE_DIR", None)
    else:
        os.environ["GANFORGE_CACHE_DIR"] = previous
