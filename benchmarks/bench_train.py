"""Training speed: s/kimg, images/s and peak memory of ganforge's trainer step.

Configs (StyleGAN2-ADA's, with ADA on, as NVlabs measured them - see ../shared/ANCHORS.md):
  cifar32   32x32, batch 64, gamma 0.01, map 2, mbstd 32, lr 0.0025, channel_base 16384 (=512 maps)
  auto256   256x256, batch 16, gamma 0.8192, map 2, mbstd 4, lr 0.0025, channel_base 16384
  progan32  ProGAN at 32x32 (stable phase), batch 64, WGAN-GP

The timed region is whole optimizer steps of the real trainer (G main, lazy path-length, D main,
lazy R1, EMA, ADA p update), with the real batch resident on the device, so the number is the
training step itself (NVlabs' s/kimg also overlaps data loading on other threads).

  python benchmarks/bench_train.py                       # all configs, default precision
  python benchmarks/bench_train.py --configs cifar32 --precision bf16 --compile
  python benchmarks/bench_train.py --configs cifar32 --steps 3 --warmup 1   # quick CPU smoke run
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.manifest import Manifest, ShardInfo, save_manifest  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from training.trainer import Trainer  # noqa: E402

CONFIGS = {
    "cifar32": ("cifar", 32, ["model.conditional=false", "train.batch=64"]),
    "auto256": ("auto256", 256, ["train.batch=16"]),
    "progan32": (
        "progan-digits",
        32,
        [
            "train.batch=64",
            "growth.batch_per_resolution={}",
            "model.channel_base=16384",
            "model.channel_max=512",
            "model.z_dim=512",
            "growth.stable_kimg=0.001",
            "growth.fade_kimg=0.001",
        ],
    ),
}


def fake_manifest(folder: Path, resolution: int) -> str:
    """One shard of random images (the trainer needs a manifest; the benchmark feeds batches)."""
    name = "train-000000.tar"
    folder.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(folder / name)) as sink:
        for i in range(8):
            buf = io.BytesIO()
            Image.fromarray(np.random.randint(0, 255, (resolution, resolution, 3), np.uint8)).save(
                buf, "PNG"
            )
            sink.write({"__key__": f"{i:06d}", "png": buf.getvalue()})
    manifest = Manifest(
        name="bench",
        resolution=resolution,
        channels=3,
        image_format="png",
        num_samples=8,
        classes={},
        shards=[ShardInfo(name, "train", 8, (folder / name).stat().st_size, "-")],
    )
    save_manifest(manifest, str(folder))
    return str(folder)


def bench(name: str, args: argparse.Namespace, work: Path) -> dict:
    preset, resolution, overrides = CONFIGS[name]
    manifest = (
        fake_manifest(work / name, resolution) if not (work / name).exists() else str(work / name)
    )
    cfg = load_config(
        preset,
        [
            *overrides,
            f"work_dir={work}",
            f"data.manifest={manifest}",
            "tracking.enabled=false",
            "augment.mode=ada" if "progan" not in name else "augment.mode=none",
            f"train.mixed_precision={args.precision}",
            f"train.compile={args.compile}",
            "train.resume=null",
            f"name=bench-{name}",
        ],
    )
    trainer = Trainer(cfg)
    trainer.resume()  # train.resume=null: a fresh start (schedule, learning rates)
    device = trainer.device
    # one step's real batches, kept on the device: time the step itself
    images, batches = trainer.next_batches()
    batch = images
    if trainer.ada is not None:  # ADA on, as in a running ADA training
        if isinstance(trainer.ada.p, torch.Tensor):
            trainer.ada.p.fill_(0.2)
        else:
            trainer.ada.p = 0.2

    def step():
        trainer.train_step(images, batches)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    images = batch * args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    trainer.dist.shutdown()
    return {
        "config": name,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "precision": args.precision,
        "compile": args.compile,
        "batch": batch,
        "s_per_kimg": seconds / images * 1000,
        "images_per_s": images / seconds,
        "peak_gb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="cifar32,auto256,progan32")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per config")
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed steps first (compile, lazy reg, cudnn)"
    )
    parser.add_argument(
        "--precision",
        default="bf16" if torch.cuda.is_available() else "no",
        choices=["no", "bf16", "fp16"],
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile G and D")
    args = parser.parse_args()
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            rows.append(bench(name.strip(), args, Path(tmp)))
            r = rows[-1]
            print(f"# {name}: {r['s_per_kimg']:.2f} s/kimg", flush=True)
    print()
    print("| config | device | precision | compile | batch | s/kimg | images/s | peak GPU memory |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = "-" if r["peak_gb"] != r["peak_gb"] else f"{r['peak_gb']:.1f} GB"
        print(
            f"| {r['config']} | {r['device']} | {r['precision']} | {r['compile']} | {r['batch']} | "
            f"{r['s_per_kimg']:.2f} | {r['images_per_s']:.0f} | {peak} |"
        )


if __name__ == "__main__":
    main()
