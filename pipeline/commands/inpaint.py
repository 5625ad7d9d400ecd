"""Fill the masked region of an image with a generator (projection on the known pixels only).

  ganforge inpaint --model models:/digits-gan@champion --image x.png --mask hole.png --out filled.png

The mask is an image of the same size (resized with nearest neighbours otherwise): white
(non-zero) pixels are the hole, as OpenCV's inpaint. Known pixels are copied unchanged; the
generated fill is blended in with a feathered seam (--feather px).
"""

from __future__ import annotations

import argparse
import json

from .project import add_projection_arguments, label_of, load_model, projection_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", "-i", required=True, help="image to restore")
    parser.add_argument("--mask", required=True, help="mask image: white = hole to fill")
    parser.add_argument("--out", "-o", required=True, help="output image (.png)")
    parser.add_argument(
        "--feather", type=float, default=1.5, help="seam feather in px (0: plain paste)"
    )
    add_projection_arguments(parser, steps=500)


def main(args: argparse.Namespace) -> int:
    from deploy.media import save_images
    from deploy.projection_io import load_image
    from deploy.restore import inpaint, load_mask

    cfg = projection_config(args)
    generator = load_model(args)
    image = load_image(args.image, generator.resolution, generator.channels)
    holes = load_mask(args.mask, image.shape[:2])
    result = inpaint(generator, image, holes, cfg, feather=args.feather, labels=label_of(args))
    out = _save(result.images[0], args.out, save_images)
    print(
        json.dumps(
            {
                "wrote": str(out),
                "hole_pixels": int(holes.sum()),
                "distance": result.projection.distance,
            }
        )
    )
    return 0


def _save(image, path: str, save_images):
    from pathlib import Path

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ValueError(f"--out: {path}: write a .png file")
    return save_images(image[None], p.parent, [p.stem])[0]
