"""Project an image into a generator's latent space (GAN inversion, NVlabs' projector algorithm).

Writes target.png, projected.png, latent.safetensors (ws or z, label, noise maps) and
progress.gif (target | projection along the optimisation) to --out:

  ganforge project --model models:/digits-gan@champion --image digit.png --out proj/
  ganforge project --model work/runs/digits/export --image x.png --out proj/ --space w+ --steps 500
  ganforge project ... --lpips-weights vgg16.safetensors     # LPIPS distance from a local file

The distance is a multi-scale pixel distance unless --lpips-weights names a local VGG16 file
(safetensors; nothing is downloaded); the one used is printed.
"""

from __future__ import annotations

import argparse
import json

from .common import add_model_argument, add_tracking_arguments, tracking_uri_from_args


def add_projection_arguments(parser: argparse.ArgumentParser, steps: int = 1000) -> None:
    """Options shared by project, inpaint and upscale."""
    add_model_argument(parser)
    group = parser.add_argument_group("projection")
    group.add_argument(
        "--steps", type=int, default=steps, help="optimisation steps (default: %(default)s)"
    )
    group.add_argument(
        "--space",
        default="w",
        choices=["w", "w+"],
        help="stylegan2 latent space (default: %(default)s)",
    )
    group.add_argument(
        "--lpips-weights",
        default=None,
        help="local VGG16/LPIPS .safetensors (default: pixel distance)",
    )
    group.add_argument(
        "--no-noise", action="store_true", help="keep the noise maps fixed (stylegan2)"
    )
    group.add_argument(
        "--label", default=None, help="class id or name (conditional models; optional)"
    )
    group.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    add_tracking_arguments(parser)


def projection_config(args: argparse.Namespace, frames: int = 0):
    from deploy.project import ProjectConfig

    return ProjectConfig(
        steps=args.steps,
        space=args.space,
        lpips_weights=args.lpips_weights,
        optimize_noise=not args.no_noise,
        seed=args.seed,
        frames=frames,
    )


def label_of(args: argparse.Namespace):
    if args.label is None:
        return None
    return int(args.label) if args.label.strip().isdigit() else args.label.strip()


def load_model(args: argparse.Namespace):
    from deploy.generator import load_generator

    return load_generator(args.model, device=args.device, tracking_uri=tracking_uri_from_args(args))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image", "-i", required=True, help="target image (centre-cropped, resized to the model)"
    )
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.add_argument("--frames", type=int, default=50, help="frames of progress.gif (0: none)")
    add_projection_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from deploy.project import project
    from deploy.projection_io import describe, load_image, save_projection

    cfg = projection_config(args, frames=args.frames)
    generator = load_model(args)
    target = load_image(args.image, generator.resolution, generator.channels)
    result = project(generator, target, cfg, labels=label_of(args))
    written = save_projection(result, target, args.out, generator.config["family"])
    print(json.dumps({**describe(result), "wrote": {k: str(v) for k, v in written.items()}}))
    return 0
