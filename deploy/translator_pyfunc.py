"""The MLflow pyfunc of a ganforge translator (CycleGAN), logged as "models from code" (no pickle).

As ``pyfunc_model.py`` for generators: MLflow copies this file into the model and runs it at load
time; it must not import ganforge. The code it needs (the network modules, the translator
export loader and ``networks/translation.py``: decoding and the size policy) travels with the
model as the vendored package under ``code/``; the generators are rebuilt from the export's
``translator.json`` + ``weights.safetensors`` in ``load_context``.

Input, one of:
- a DataFrame (or records / dict of lists over REST) with a column ``image``: PNG/JPEG/WebP bytes,
  or their base64 text (a ``data:`` URL prefix is accepted);
- a uint8 array [N, H, W, C] or one image [H, W, C] / [H, W].

Params: ``direction`` (``a2b`` default, or ``b2a``), ``size`` (``auto`` default, ``own``,
``native``; see ``networks/translation.py``). Output: uint8 images [N, H', W', C]; with ``own``/
``auto`` every image of one call must come out at the same size (send differently sized images
in separate calls, or use ``size=native``).
"""

from __future__ import annotations

import importlib
import os

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

MAX_IMAGES = 256  # per call


class GanforgeTranslatorModel(PythonModel):
    def load_context(self, context) -> None:
        package = (context.model_config or {}).get("code_package", "ganforge_pyfunc")
        export = importlib.import_module(f"{package}.networks.export")
        self.translation = importlib.import_module(f"{package}.networks.translation")
        import torch

        device = os.environ.get("GANFORGE_DEVICE") or (
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        self.generators, self.config = export.load_translator_export(
            context.artifacts["export"], device=device
        )

    def predict(self, context, model_input, params: dict | None = None) -> np.ndarray:
        params = params or {}
        tr = self.translation
        direction = str(params.get("direction") or "a2b")
        size = str(params.get("size") or "auto")
        if direction not in self.generators:
            raise tr.TranslationInputError(
                f"direction: {direction!r} is not in this model; choose one of "
                f"{', '.join(self.generators)}"
            )
        channels = int(self.config["channels"])
        images = _images(model_input, channels, tr)
        if not images:
            raise tr.TranslationInputError("input: no images")
        if len(images) > MAX_IMAGES:
            raise tr.TranslationInputError(
                f"input: {len(images)} images; at most {MAX_IMAGES} per call"
            )
        outputs = [
            tr.translate_array(
                self.generators[direction],
                image,
                resolution=int(self.config["resolution"]),
                size=size,
            )
            for image in images
        ]
        if len({o.shape for o in outputs}) > 1:
            raise tr.TranslationInputError(
                "input: the images come out at different sizes; send them in separate calls "
                "or use size=native"
            )
        return np.stack(outputs)


def _images(model_input, channels: int, tr) -> list[np.ndarray]:
    """Whatever the caller sent -> a list of uint8 [H, W, channels] images."""
    if isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8:
        batch = model_input if model_input.ndim == 4 else model_input[None]
        return [tr.as_uint8_image(x, channels, what=f"image {i}") for i, x in enumerate(batch)]
    column = None
    if hasattr(model_input, "columns"):  # a DataFrame
        if "image" not in model_input.columns:
            raise tr.TranslationInputError(
                f"input: expected a column 'image' (PNG/JPEG bytes or base64), got "
                f"{[str(c) for c in model_input.columns]}"
            )
        column = list(model_input["image"])
    elif isinstance(model_input, dict) and "image" in model_input:
        value = model_input["image"]
        column = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    elif isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        column = [r.get("image") for r in model_input]
    if column is None:
        raise tr.TranslationInputError(
            f"input: expected a DataFrame with an 'image' column or a uint8 array, got "
            f"{type(model_input).__name__}"
        )
    images = []
    for i, value in enumerate(column):
        if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim >= 2:
            images.append(tr.as_uint8_image(value, channels, what=f"image {i}"))
        else:
            images.append(tr.decode_image(value, channels, what=f"image {i}"))
    return images


set_model(GanforgeTranslatorModel())
