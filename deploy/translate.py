"""Load a translator (CycleGAN export) from anywhere it lives, and translate images and files.

``load_translator`` accepts what ``load_generator`` accepts: a local export folder
(``translator.json`` + ``weights.safetensors``), a downloaded MLflow model folder,
``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``, ``runs:/RUN_ID/generator`` or a run id. The
direction generators are rebuilt from the JSON config and safetensors weights
(``training.networks.export.load_translator_export``); no pickle is read. Image decoding and the
size policy are ``training.networks.translation`` (shared with the pyfunc and ``/translate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.networks.export import atomic_write, load_translator_export
from training.networks.translation import (
    SIZE_POLICIES,
    TranslationInputError,
    as_uint8_image,
    decode_image,
    resolve_size,
    translate_array,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class LoadedTranslator:
    """The direction generators of a translator export + its config."""

    def __init__(
        self, generators: dict[str, torch.nn.Module], config: dict[str, Any], source: str
    ) -> None:
        self.generators, self.config, self.source = generators, config, source
        self.directions: list[str] = list(config["directions"])
        self.resolution = int(config["resolution"])
        self.channels = int(config["channels"])

    def __repr__(self) -> str:
        return (
            f"LoadedTranslator({self.config['family']}, {'/'.join(self.directions)}, "
            f"{self.resolution}px, from {self.source})"
        )

    def check_direction(self, direction: str) -> str:
        if direction not in self.directions:
            raise TranslationInputError(
                f"direction: {direction!r} is not in this model; choose one of "
                f"{', '.join(self.directions)}"
            )
        return direction

    def translate(
        self, image: np.ndarray, direction: str = "a2b", size: str = "auto"
    ) -> np.ndarray:
        """uint8 [H, W] / [H, W, C] -> uint8 [H', W', channels] (see the size policy)."""
        generator = self.generators[self.check_direction(direction)]
        image = as_uint8_image(image, self.channels)
        return translate_array(generator, image, resolution=self.resolution, size=size)

    def translate_bytes(self, data: bytes | str, direction: str = "a2b", size: str = "auto"):
        """PNG/JPEG bytes (or base64 text) -> uint8 [H', W', channels]."""
        self.check_direction(direction)
        resolve_size(size, 4, 4)  # validate the option before decoding
        return self.translate(decode_image(data, self.channels), direction, size)


def load_translator(
    uri_or_path: str | Path, device: str | torch.device = "cpu", tracking_uri: str | None = None
) -> LoadedTranslator:
    """``models:/NAME@ALIAS``, ``runs:/...``, a run id, or a local folder -> LoadedTranslator."""
    from .generator import resolve_export

    export_dir = resolve_export(uri_or_path, tracking_uri)
    generators, config = load_translator_export(export_dir, device=device)
    return LoadedTranslator(generators, config, source=str(uri_or_path))


# -- files ---------------------------------------------------------------------------------------


@dataclass
class TranslateReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(input, reason) for each input that could not be translated."""


def list_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Files and folders -> [(image file, output name relative to --out)], folders recursively
    (hidden files skipped), in sorted order. Output names keep the sub-folders, suffix .png."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                rel = file.relative_to(path)
                if (
                    file.is_file()
                    and file.suffix.lower() in IMAGE_SUFFIXES
                    and not any(p.startswith(".") for p in rel.parts)
                ):
                    found.append((file, Path(path.name) / rel.with_suffix(".png")))
        elif path.is_file():
            found.append((path, Path(path.name).with_suffix(".png")))
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return found


def _save_png(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    pil = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"), suffix=".png")


def translate_files(
    translator: LoadedTranslator,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    direction: str = "a2b",
    size: str = "auto",
    progress: Callable[[Iterable], Iterable] | None = None,
) -> TranslateReport:
    """Translate image files/folders into ``out_dir`` (PNG); unreadable images are skipped and
    reported, not fatal. ``progress`` wraps the iteration (e.g. ``tqdm``)."""
    translator.check_direction(direction)
    if size not in SIZE_POLICIES:
        raise TranslationInputError(f"size: {size!r} is not valid; choose one of {SIZE_POLICIES}")
    items = list_inputs(inputs)
    if not items:
        raise FileNotFoundError(
            f"no images found in {', '.join(map(str, inputs))} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    out = Path(out_dir)
    report = TranslateReport()
    names: set[Path] = set()
    for file, rel in progress(items) if progress else items:
        if rel in names:  # two inputs with the same name: keep both
            rel = rel.with_name(f"{rel.stem}-{len(names)}{rel.suffix}")
        names.add(rel)
        try:
            image = decode_image(file.read_bytes(), translator.channels, what=str(file))
        except (TranslationInputError, OSError) as exc:
            report.skipped.append((str(file), str(exc)))
            continue
        result = translator.translate(image, direction, size)
        report.written.append(_save_png(result, out / rel))
    return report
