"""Evaluate a generator against a dataset: FID, KID, precision/recall, IS and class coverage.

  ganforge eval --model runs/digits/export --data work/data/digits --metrics coverage
  ganforge eval --model models:/ffhq@champion --data /data/ffhq256 --num-images 50000 \\
      --inception-weights /shared/weights-inception-2015-12-05-6726825d.pth
  accelerate launch --num_processes 8 -m pipeline.cli eval --model ... --data ...   (split
      across GPUs; torchrun works too: the same training.distributed.Distributed as `train`)

The Inception weights are never downloaded: give --inception-weights, set
GANFORGE_INCEPTION_WEIGHTS, or place the file in torch's hub cache; a missing file fails at once
with the download URL (docs/evaluation.md). Real-data features are cached per dataset
(<dataset>/eval-cache, else ~/.cache/ganforge/eval). For a registry model (models:/NAME@ALIAS or
models:/NAME/VERSION) the results are also set as version tags metric.<name>, which
`ganforge register --promote-if-better` compares.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from .common import check_tracking_uri_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.metrics import FEATURE_EXTRACTORS, METRICS

    parser.add_argument(
        "--model",
        "-m",
        required=True,
        help="export folder, MLflow model folder, models:/NAME@ALIAS, models:/NAME/VERSION, "
        "runs:/RUN_ID/generator or a run id",
    )
    parser.add_argument(
        "--data", "-d", required=True, help="dataset manifest (file or the folder holding it)"
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, from {', '.join(METRICS)} (default: fid,kid,pr,is, plus coverage "
        f"on labelled data)",
    )
    parser.add_argument(
        "--num-images", "-n", type=int, default=50_000, help="generated images (default 50000)"
    )
    parser.add_argument(
        "--feature-extractor",
        choices=FEATURE_EXTRACTORS,
        default="inception",
        help="feature space of fid/kid/pr/is (classifier: no Inception weights needed; "
        "results are named classifier_*)",
    )
    parser.add_argument(
        "--inception-weights",
        default=None,
        metavar="PATH",
        help="weights-inception-2015-12-05-6726825d.pth (default: $GANFORGE_INCEPTION_WEIGHTS, "
        "then $TORCH_HOME/hub/checkpoints/)",
    )
    parser.add_argument(
        "--batch", type=int, default=64, help="images per generator call (default 64)"
    )
    parser.add_argument(
        "--max-real", type=int, default=0, help="real images in the reference (default 0: all)"
    )
    parser.add_argument(
        "--split", default="train", help="dataset split of the real images (default train)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="first seed; image i uses seed + i (default 0)"
    )
    parser.add_argument(
        "--psi", type=float, default=1.0, help="truncation psi (default 1.0: none, as for FID)"
    )
    parser.add_argument(
        "--noise-mode",
        choices=("random", "const", "none"),
        default="random",
        help="per-pixel noise of StyleGAN generators (default random, as in the papers)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers decoding real images"
    )
    parser.add_argument("--cache-dir", default=None, help="reference-statistics cache folder")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--no-tags", action="store_true", help="do not tag the registry model version"
    )
    parser.add_argument(
        "--log-run", default=None, metavar="RUN_ID", help="also log the metrics to this MLflow run"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")


def _distributed(device_arg: str):
    """The trainer's ``training.distributed.Distributed`` (one process, or every rank of an
    `accelerate launch` / torchrun), and the device to evaluate on."""
    import torch

    from training.distributed import Distributed

    dist = Distributed(cpu=device_arg == "cpu")
    device = dist.device
    if dist.world_size == 1 and device_arg not in ("auto", "cpu"):
        device = torch.device(device_arg)  # an explicit single-process device (e.g. cuda:1)
    return dist, device


def _registry_version(model: str, tracking_uri: str | None) -> tuple[str, str] | None:
    """models:/NAME/VERSION or models:/NAME@ALIAS -> (name, version); None for anything else."""
    m = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([^/]+))", model)
    if not m:
        return None
    if m.group(2):
        return m.group(1), m.group(2)
    from mlflow import MlflowClient

    from deploy.generator import mlflow_uri

    with mlflow_uri(tracking_uri):
        return m.group(1), MlflowClient().get_model_version_by_alias(m.group(1), m.group(3)).version


def _record(args: argparse.Namespace, results: dict[str, float], manifest) -> None:
    from mlflow import MlflowClient

    from deploy.generator import mlflow_uri

    version = None if args.no_tags else _registry_version(args.model, args.tracking_uri)
    if version is None and not args.log_run:
        return
    with mlflow_uri(args.tracking_uri):
        client = MlflowClient()
        if version is not None:
            name, number = version
            for key, value in results.items():
                client.set_model_version_tag(name, number, f"metric.{key}", f"{value:.6g}")
            client.set_model_version_tag(name, number, "eval.dataset_sha256", manifest.sha256)
            client.set_model_version_tag(name, number, "eval.num_images", str(args.num_images))
            print(f"tagged {name} version {number} with metric.{{{','.join(results)}}}")
        if args.log_run:
            for key, value in results.items():
                client.log_metric(args.log_run, f"eval/{key}", value)


def main(args: argparse.Namespace) -> int:
    import torch

    from data_prep.manifest import load_manifest
    from deploy.generator import load_generator
    from training.metrics import EvalConfig, evaluate, preflight
    from training.metrics.cas import only_if, split_metrics, usefulness_hook

    manifest = load_manifest(args.data)
    metrics = args.metrics or ("fid,kid,pr,is" + (",coverage" if manifest.num_classes >= 2 else ""))
    metrics, app_metrics = split_metrics(metrics)  # cas, augment: training.metrics.cas
    cfg = EvalConfig(
        metrics=metrics or "coverage",
        num_images=args.num_images,
        feature_extractor=args.feature_extractor,
        inception_weights=args.inception_weights,
        batch=args.batch,
        max_real=args.max_real,
        split=args.split,
        seed=args.seed,
        num_workers=args.workers,
    )
    preflight(manifest, cfg)  # missing Inception weights fail here, before loading anything
    check_tracking_uri_for(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), args.model)
    dist, device = _distributed(args.device)
    rank, world_size = dist.rank, dist.world_size
    loaded = load_generator(args.model, device=device, tracking_uri=args.tracking_uri)
    if loaded.channels != manifest.channels:
        raise ValueError(
            f"{args.model}: the generator makes {loaded.channels}-channel images but {args.data} has "
            f"{manifest.channels} channels; evaluate against the dataset it was trained on"
        )
    if loaded.resolution != manifest.resolution and rank == 0:
        print(
            f"ganforge eval: warning: generator resolution {loaded.resolution} != dataset resolution "
            f"{manifest.resolution}; features are computed at each one's own size",
            file=sys.stderr,
        )
    generator = loaded.generator

    def sample(z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return generator(z, c, truncation_psi=args.psi, noise_mode=args.noise_mode)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = only_if(metrics, evaluate)(
        sample,
        manifest,
        cfg,
        z_dim=loaded.z_dim,
        c_dim=loaded.c_dim,
        device=device,
        rank=rank,
        world_size=world_size,
        gather=dist.gather if world_size > 1 else None,
        cache_dir=args.cache_dir,
        log=log if rank == 0 else None,
    )
    dist.shutdown()
    if rank != 0:
        return 0
    results.update(usefulness_hook(app_metrics, sample, manifest, loaded, args, device, log))
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.6g}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "dataset": manifest.name,
                    "dataset_sha256": manifest.sha256,
                    "num_images": cfg.num_images,
                    "metrics": results,
                },
                indent=2,
            )
            + "\n"
        )
    _record(args, results, manifest)
    return 0
