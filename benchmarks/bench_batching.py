"""Does batching change pixels, and what does the fixed-size chunk cost? (docs/deploy.md)

For a randomly initialised StyleGAN2 generator (default 32 px, channel_max 64, CPU), prints:

1. how many of ``--images`` images differ (and by how many uint8 levels at most) from the same
   latents run at batch ``--images``, when the generator runs on unpadded batches of 1, 3, 8,
   32 (the old behaviour) and through ``deploy.sampling.synthesize`` (fixed chunks of
   ``BATCH``, last one padded);
2. throughput of ``synthesize`` for 1 image and for 64 images, by chunk size: the cost of
   padding a single image to a chunk, and what larger chunks buy for many images.

Usage::

    python benchmarks/bench_batching.py [--images 128] [--resolution 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deploy import sampling
from training.networks import build_networks
from training.networks.config import ModelConfig


def unpadded(generator, z: np.ndarray, batch: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(z), batch):
            zb = torch.from_numpy(z[i : i + batch]).to(next(generator.parameters()).device)
            out.append(
                sampling.to_uint8(generator(zb, None, truncation_psi=0.7, noise_mode="const"))
            )
    return np.concatenate(out)


def differing(images: np.ndarray, reference: np.ndarray) -> tuple[int, int]:
    diff = np.abs(images.astype(np.int16) - reference.astype(np.int16)).reshape(len(images), -1)
    return int((diff.max(1) > 0).sum()), int(diff.max())


def per_second(fn, images: int, repeats: int = 3) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return images * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--channel-max", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = ModelConfig(
        z_dim=64, w_dim=64, map_depth=2, channel_base=1024, channel_max=args.channel_max
    )
    generator = build_networks(cfg, args.resolution, 3, 0)[0].eval().to(args.device)
    with torch.no_grad():
        generator.mapping.w_avg.normal_()
    z = sampling.seeds_to_latents(range(args.images), cfg.z_dim)
    reference = unpadded(generator, z, args.images)

    print(
        f"StyleGAN2 {args.resolution} px, channel_max {args.channel_max}, {args.device}, "
        f"{args.images} images, psi 0.7, noise const"
    )
    print(f"\n{'how the generator runs':<42} {'images differing':>17} {'max levels':>11}")
    for batch in (1, 3, 8, 32):
        n, levels = differing(unpadded(generator, z, batch), reference)
        print(f"{f'unpadded batches of {batch}':<42} {n:>17} {levels:>11}")
    together = sampling.synthesize(generator, z, None, psi=0.7)
    for label, images in (
        (f"synthesize (chunks of {sampling.BATCH}), all at once", together),
        (
            "synthesize, one image per call",
            np.concatenate(
                [sampling.synthesize(generator, z[i : i + 1], None, psi=0.7) for i in range(len(z))]
            ),
        ),
    ):
        n, levels = differing(images, together)
        print(f"{label:<42} {n:>17} {levels:>11}  (vs synthesize all at once)")

    print(f"\n{'chunk size':>10} {'1 image: img/s':>15} {'64 images: img/s':>17}")
    z64 = z[:64]
    for chunk in (1, 8, 32):
        one = per_second(
            lambda c=chunk: sampling.synthesize(generator, z[:1], None, batch_size=c), 1
        )
        many = per_second(
            lambda c=chunk: sampling.synthesize(generator, z64, None, batch_size=c), 64
        )
        print(f"{chunk:>10} {one:>15.1f} {many:>17.1f}")


if __name__ == "__main__":
    main()
