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
import shlex
import time
from pathlib import Path

import numpy as np


def before_after_cells(translator, real_a: np.ndarray, real_b: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] reals of each domain -> uint8 [4N, H, W, C]: N rows of
    (A, A->B, B, B->A) for a 4-column grid, translated at the model's resolution."""
    cells = []
    for a, b in zip(real_a, real_b, strict=False):
        cells += [a, translator.translate(a, "a2b"), b, translator.translate(b, "b2a")]
    cells = np.stack(cells)
    scale = max(1, 128 // cells.shape[1])  # small models: nearest-upscale so the grid is visible
    return cells.repeat(scale, axis=1).repeat(scale, axis=2)


def main(cfg, args: argparse.Namespace) -> int:
    from data_prep import shard_dataset
    from data_prep.manifest import load_manifest
    from data_prep.translation_demo import write_demo_domains
    from deploy.generator import save_grid
    from deploy.registry import register_export
    from deploy.translate import load_translator
    from pipeline.config import config_to_yaml
    from training.families.cyclegan import domain_paths, read_images
    from training.tracking import check_tracking_server, resolve_tracking_uri
    from training.trainer import train

    from .common import EXIT_DIVERGED, EXIT_INTERRUPTED

    started = time.time()
    uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
    if cfg.tracking.enabled:
        check_tracking_server(uri)  # the registry is needed at stage 3: fail now, in seconds
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
    manifests = []
    for name, source, path in zip("AB", sources or [None, None], paths, strict=True):
        if source is None:  # cyclegan.domains were prepared beforehand
            manifests.append(load_manifest(path))
        else:
            prep = dataclasses.replace(cfg.prep, source=source, out=path)
            manifests.append(shard_dataset(prep, out=path))
        m = manifests[-1]
        print(f"      domain {name}: {m.num_samples} images in {len(m.shards)} shards at {path}")
    cfg = dataclasses.replace(cfg, cyclegan=dataclasses.replace(cfg.cyclegan, domains=paths))

    print(f"[2/4] train: {cfg.model.family}, {cfg.train.total_kimg:g} kimg", flush=True)
    result = train(cfg, config_yaml=config_to_yaml(cfg))
    if result.status != "finished" or result.export_dir is None:
        print(f"training {result.status}; re-run the same command to resume")
        return EXIT_DIVERGED if result.status == "diverged" else EXIT_INTERRUPTED

    print(f"[3/4] register: {cfg.tracking.model_name} @ {cfg.tracking.alias}", flush=True)
    if not cfg.tracking.enabled:
        print("      tracking.enabled=false: translating with the local export instead")
        model_uri = str(result.export_dir)
    else:
        info = register_export(
            result.export_dir,
            model_name=cfg.tracking.model_name,
            alias=cfg.tracking.alias,
            tracking_uri=uri,
            run_id=result.mlflow_run_id,
        )
        model_uri = f"models:/{info.name}@{cfg.tracking.alias}" if cfg.tracking.alias else info.uri

    print(f"[4/4] translate: {model_uri}", flush=True)
    translator = load_translator(model_uri, tracking_uri=uri)
    rows = getattr(args, "grid_rows", 8)
    real_a, real_b = (read_images(m, rows).permute(0, 2, 3, 1).numpy() for m in manifests)
    grid_path = save_grid(
        before_after_cells(translator, real_a, real_b),
        Path(cfg.work_dir) / "outputs" / f"{cfg.name}-before-after.png",
        cols=4,
    )

    ui = (
        f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
        if uri.startswith(("sqlite:", "file:"))
        else f"open {uri} in a browser"
    )
    print()
    print(f"ganforge run finished in {time.time() - started:.0f} s")
    print(f"  domains:      A {paths[0]}, B {paths[1]}")
    print(f"  run:          {result.run_dir} ({result.images_seen / 1000:.1f} kimg)")
    print(f"  mlflow run:   {result.mlflow_run_id} in experiment {cfg.tracking.experiment!r}")
    print(f"  model:        {model_uri}")
    evals = {k.split("/", 1)[1]: v for k, v in result.metrics.items() if k.startswith("metrics/")}
    if evals:
        print("  quality:      " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(evals.items())))
    print(f"  before/after: {grid_path} (rows: A | A->B | B | B->A)")
    print(
        f"  translate:    ganforge translate --model {model_uri} --direction a2b IMAGE... --out DIR"
    )
    print(f"  open the UI:  {ui}")
    return 0
