"""What a trained generator is good for, measured on held-out real images (docs/applications.md).

On the manifest's ``val`` split (real images the generator never saw):

- inpainting: a centred square hole; PSNR on the hole pixels and SSIM on the whole image, for
  mean fill (the known pixels' mean colour), OpenCV's Telea inpainting (``opencv-python-headless``,
  the ``bench`` extra; skipped when missing) and the GAN (``deploy.restore.inpaint``);
- 4x super-resolution: the image area-downscaled 4x, then upscaled back by bicubic
  interpolation and by the GAN (``deploy.restore.upscale``, PULSE-style); PSNR/SSIM on the whole
  image, plus the consistency error (the result downscaled again vs the input);
- CAS and augmentation gain (``training.metrics.cas``) with the real-data accuracy.

Prints one markdown table and writes before/after grids (PNG) to --pictures.

  python benchmarks/bench_applications.py --model work/runs/digits-cond/export \\
      --data work/data/digits-32-val20 --images 64 --steps 300 --pictures docs/img/applications
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.manifest import load_manifest  # noqa: E402
from deploy.generator import load_generator  # noqa: E402
from deploy.media import save_images  # noqa: E402
from deploy.project import ProjectConfig, to_tensor  # noqa: E402
from deploy.restore import downscale, inpaint, upscale  # noqa: E402
from training.metrics.cas import UsefulnessConfig, usefulness  # noqa: E402
from training.metrics.coverage import ClassifierConfig, _read_all  # noqa: E402
from training.networks.samples import make_grid, to_uint8  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean over images of the PSNR (dB, peak 255) on ``where`` ([N, H, W] bool) or all pixels."""
    out = []
    for i in range(len(a)):
        d = (a[i].astype(np.float64) - b[i].astype(np.float64)) ** 2
        mse = d[where[i]].mean() if where is not None else d.mean()
        out.append(10 * math.log10(255.0**2 / max(mse, 1e-10)))
    return float(np.mean(out))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    ta = torch.from_numpy(a).permute(0, 3, 1, 2).double()
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).double()
    return float(tm_ssim(ta, tb, data_range=255.0))


def mean_fill(images: np.ndarray, holes: np.ndarray) -> np.ndarray:
    out = images.copy()
    for i in range(len(images)):
        out[i][holes[i]] = images[i][~holes[i]].mean(axis=0).round().astype(np.uint8)
    return out


def telea(images: np.ndarray, holes: np.ndarray) -> np.ndarray | None:
    try:
        import cv2
    except ImportError:
        return None
    out = []
    for img, hole in zip(images, holes):
        res = cv2.inpaint(
            np.ascontiguousarray(img), hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA
        )
        out.append(res.reshape(img.shape))
    return np.stack(out)


def bicubic(low: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(low).permute(0, 3, 1, 2).double()
    y = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def nearest(low: np.ndarray, size: int) -> np.ndarray:
    f = size // low.shape[1]
    return low.repeat(f, axis=1).repeat(f, axis=2)


def save_picture(images: np.ndarray, folder: Path, name: str, cols: int) -> None:
    """A grid with 2 px gaps, nearest-upscaled so 32 px cells are visible on a page."""
    save_images(make_grid(images, cols=cols, pad=2, upscale_to=64)[None], folder, [name])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="manifest folder with a 'val' split")
    p.add_argument("--images", type=int, default=64, help="held-out images for the restorations")
    p.add_argument("--steps", type=int, default=300, help="projection steps")
    p.add_argument("--hole", type=float, default=0.375, help="hole side as a fraction of the image")
    p.add_argument("--factor", type=int, default=4, help="super-resolution factor")
    p.add_argument("--classifier-epochs", type=int, default=5)
    p.add_argument("--real-fraction", type=float, default=0.1)
    p.add_argument("--skip-cas", action="store_true")
    p.add_argument("--pictures", default=None, help="folder for the before/after grids")
    args = p.parse_args()

    torch.manual_seed(0)
    lg = load_generator(args.model)
    manifest = load_manifest(args.data)
    val_x, val_y = _read_all(manifest, args.images, "val")
    images = val_x.permute(0, 2, 3, 1).numpy()[: args.images]
    if images.shape[-1] != lg.channels or images.shape[1] != lg.resolution:
        raise SystemExit(f"{args.data}: images {images.shape[1:]} do not match the model")
    n, r = len(images), lg.resolution
    cfg = ProjectConfig(steps=args.steps, frames=0)
    rows: list[tuple[str, str, str, str]] = []

    # -- inpainting
    side = max(2, round(args.hole * r))
    lo = (r - side) // 2
    holes = np.zeros((n, r, r), bool)
    holes[:, lo : lo + side, lo : lo + side] = True
    t = time.time()
    gan = inpaint(lg, images, holes, cfg)
    t_inpaint = time.time() - t
    fills = {
        "mean fill": mean_fill(images, holes),
        "OpenCV Telea": telea(images, holes),
        "GAN (ours)": gan.images,
    }
    for name, out in fills.items():
        if out is None:
            rows.append((f"inpaint {side}x{side} hole", name, "n/a (no opencv)", ""))
            continue
        rows.append(
            (
                f"inpaint {side}x{side} hole",
                name,
                f"{psnr(out, images, holes):.2f}",
                f"{ssim(out, images):.3f}",
            )
        )

    # -- super-resolution
    low = to_uint8(downscale(to_tensor(images, torch.device("cpu")), r // args.factor))
    t = time.time()
    sr = upscale(lg, low, cfg)
    t_upscale = time.time() - t
    again = to_uint8(downscale(to_tensor(sr.images, torch.device("cpu")), r // args.factor))
    consistency = np.abs(again.astype(float) - low.astype(float)).mean()
    bic = bicubic(low, r)
    rows.append(
        (
            f"{args.factor}x super-resolution",
            "bicubic",
            f"{psnr(bic, images):.2f}",
            f"{ssim(bic, images):.3f}",
        )
    )
    rows.append(
        (
            f"{args.factor}x super-resolution",
            "GAN (ours, PULSE-style)",
            f"{psnr(sr.images, images):.2f}",
            f"{ssim(sr.images, images):.3f}",
        )
    )

    print(f"model {args.model} ({lg!r}); {n} held-out real images from {args.data} (val split)")
    print(
        f"projection: {args.steps} steps, W space, distance {gan.projection.distance}; "
        f"inpaint {t_inpaint:.0f} s, upscale {t_upscale:.0f} s for the batch on {lg.device}"
    )
    print(
        f"super-resolution consistency: GAN output downscaled vs input, mean abs error {consistency:.2f} / 255\n"
    )
    print("| task | method | PSNR (dB) | SSIM |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")

    if not args.skip_cas:
        generator = lg.generator

        def sample(z, c):
            return generator(z, c, truncation_psi=1.0, noise_mode="random")

        ucfg = UsefulnessConfig(
            real_fraction=args.real_fraction,
            classifier=ClassifierConfig(epochs=args.classifier_epochs),
        )
        res = usefulness(
            sample,
            manifest,
            ["cas", "augment"],
            z_dim=lg.z_dim,
            c_dim=lg.c_dim,
            cfg=ucfg,
            device=lg.device,
        )
        print("\n| measure | accuracy on held-out real |")
        print("|---|---|")
        print(
            f"| classifier on real training data (all {manifest.split_samples('train')}) | {res['cas_real_accuracy']:.3f} |"
        )
        print(f"| CAS: classifier on generated data only | {res['cas']:.3f} |")
        print(f"| chance | {res['cas_chance']:.3f} |")
        print(
            f"| {res['augment_real_fraction']:.0%} of the real data | {res['augment_real_only']:.3f} |"
        )
        print(
            f"| {res['augment_real_fraction']:.0%} real + generated | {res['augment_with_synth']:.3f} |"
        )
        print(f"| augmentation gain | {res['augment_gain']:+.3f} |")

    if args.pictures:
        out = Path(args.pictures)
        k = min(8, n)
        masked = images.copy()
        masked[holes] = 255 if lg.channels == 1 else (255, 0, 0)  # the hole in red
        cols = [images[:k], masked[:k], fills["mean fill"][:k]]
        if fills["OpenCV Telea"] is not None:
            cols.append(fills["OpenCV Telea"][:k])
        cols.append(gan.images[:k])
        save_picture(np.concatenate(cols), out, "inpaint", k)
        rows_sr = [images[:k], nearest(low[:k], r), bic[:k], sr.images[:k]]
        save_picture(np.concatenate(rows_sr), out, "upscale", k)
        labels = [i % lg.c_dim for i in range(8 * lg.c_dim)] if lg.c_dim else None
        samples = lg.generate(
            list(range(8 * max(1, lg.c_dim))), labels=sorted(labels) if labels else None
        )
        save_picture(samples, out, "synth", 8)
        print(
            f"\npictures: {out}/inpaint.png (rows: real, masked, mean fill, [Telea,] GAN), "
            f"upscale.png (rows: real, {args.factor}x smaller (nearest), bicubic, GAN), synth.png (8 per class)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
