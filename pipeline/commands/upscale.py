"""Super-resolve a small image with a generator (PULSE-style: the output, area-downscaled to the
input size, matches the input).

  ganforge upscale --model models:/digits-gan@champion --image small8px.png --out big.png

The input must be square with a side that divides the model's resolution (e.g. 8 px for a
32 px model: 4x). The result is a plausible sharp image consistent with the input, not
necessarily the true one; its downscaled version is reported beside it.
"""

from __future__ import annotations

import argparse
import json

from .inpaint import _save
from .project import add_projection_arguments, label_of, load_model, projection_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", "-i", required=True, help="low-resolution square image")
    parser.add_argument("--out", "-o", required=True, help="output image (.png)")
    add_projection_arguments(parser, steps=500)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from deploy.media import save_images
    from deploy.projection_io import load_image, to_tensor
    from deploy.restore import downscale, upscale
    from training.networks.samples import to_uint8

    cfg = projection_config(args)
    generator = load_model(args)
    low = load_image(args.image, None, generator.channels)
    result = upscale(generator, low, cfg, labels=label_of(args))
    out = _save(result.images[0], args.out, save_images)
    again = to_uint8(downscale(to_tensor(result.images, torch.device("cpu")), low.shape[0]))
    err = float(np.abs(again[0].astype(float) - low.astype(float)).mean())
    print(
        json.dumps(
            {
                "wrote": str(out),
                "factor": generator.resolution // low.shape[0],
                "consistency_mae": round(err, 3),
            }
        )
    )
    return 0
