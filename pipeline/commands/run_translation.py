"""``ganforge run`` for translators (``model.family: cyclegan``), e.g. ``--preset cyclegan-demo``:

  1. prep      both domains -> shards + manifest each (``cyclegan.sources``; ``[demo]`` renders the
               built-in photos vs colour-graded photos first, no download)
  2. train     CycleGAN on Accelerate, tracked in MLflow
  3. register  the translator export in the Model Registry with an alias (champion)
  4. translate a before/after grid from models:/<name>@<alias>: rows of A | A->B and B | B->A

Re-running the same command resumes where it stopped (finished stages are reused).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .run_stages import run_pipeline

if TYPE_CHECKING:
    from pipeline.config import RunConfig


def before_after_cells(translator, real_a: np.ndarray, real_b: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] reals of each domain -> uint8 [4N, H, W, C]: N rows of
    (A, A->B, B, B->A) for a 4-column grid, translated at the model's resolution."""
    cells = []
    for a, b in zip(real_a, real_b, strict=False):
        cells += [a, translator.translate(a, "a2b"), b, translator.translate(b, "b2a")]
    cells = np.stack(cells)
    scale = max(1, 128 // cells.shape[1])  # small models: nearest-upscale so the grid is visible
    return cells.repeat(scale, axis=1).repeat(scale, axis=2)


def main(cfg: RunConfig, args: argparse.Namespace) -> int:
    from data_prep import shard_dataset
    from data_prep.manifest import Manifest, load_manifest
    from data_prep.translation_demo import write_demo_domains
    from deploy.generator import save_grid
    from deploy.translate import load_translator
    from training.domains import read_images
    from training.families.cyclegan import domain_paths

    manifests: list[Manifest] = []

    def prep(cfg: RunConfig) -> tuple[RunConfig, str]:
        paths = domain_paths(cfg)
        sources = list(cfg.cyclegan.sources)
        if sources == ["demo"]:
            images_dir = Path(cfg.work_dir) / "data" / f"{cfg.name}-images"
            print(f"[1/4] prep: rendering the built-in demo domains into {images_dir}", flush=True)
            sources = [
                str(d) for d in write_demo_domains(images_dir, size=max(64, cfg.prep.resolution))
            ]
        else:
            print("[1/4] prep: both domains", flush=True)
        for name, source, path in zip("AB", sources or [None, None], paths, strict=True):
            if source is None:  # cyclegan.domains were prepared beforehand
                manifests.append(load_manifest(path))
            else:
                domain_prep = dataclasses.replace(cfg.prep, source=source, out=path)
                manifests.append(shard_dataset(domain_prep, out=path))
            m = manifests[-1]
            print(
                f"      domain {name}: {m.num_samples} images in {len(m.shards)} shards at {path}"
            )
        cfg = dataclasses.replace(cfg, cyclegan=dataclasses.replace(cfg.cyclegan, domains=paths))
        return cfg, f"  domains:      A {paths[0]}, B {paths[1]}"

    def translate(cfg: RunConfig, model_uri: str, uri: str) -> list[str]:
        print(f"[4/4] translate: {model_uri}", flush=True)
        translator = load_translator(model_uri, tracking_uri=uri)
        rows = getattr(args, "grid_rows", 8)
        real_a, real_b = (read_images(m, rows).permute(0, 2, 3, 1).numpy() for m in manifests)
        grid_path = save_grid(
            before_after_cells(translator, real_a, real_b),
            Path(cfg.work_dir) / "outputs" / f"{cfg.name}-before-after.png",
            cols=4,
        )
        return [
            f"  before/after: {grid_path} (rows: A | A->B | B | B->A)",
            f"  translate:    ganforge translate --model {model_uri} --direction a2b IMAGE... --out DIR",
        ]

    return run_pipeline(
        cfg, prep=prep, deliver=translate, use="translating with", processes=args.processes
    )
