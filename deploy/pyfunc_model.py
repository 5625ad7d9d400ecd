"""The MLflow pyfunc of a ganforge generator, logged as "models from code" (no pickle).

MLflow copies this file into the model and executes it at load time; ``set_model`` at the bottom
hands it the model object. It must not import ganforge: the code it needs (the network family
modules and ``deploy/sampling.py``) travels with the model as a vendored package under ``code/``
(built by ``deploy.registry.vendor_code``), whose name comes from the model config. The generator
is rebuilt from the export's ``generator.json`` and ``weights.safetensors`` in ``load_context``.

Input (a DataFrame, or records over REST): column ``seed`` (int) *or* ``latent`` (list of z_dim
floats) per image, optional ``label`` (class id) for conditional models. Params: ``psi``
(truncation, default 1.0), ``noise_mode`` (``const`` | ``random`` | ``none``, default const).
Output: uint8 images [N, H, W, C].
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

MAX_IMAGES = 1024  # per call; keeps a bad request from allocating the world


class GanforgeGeneratorModel(PythonModel):
    def load_context(self, context) -> None:
        package = (context.model_config or {}).get("code_package", "ganforge_pyfunc")
        self.sampling = importlib.import_module(f"{package}.sampling")
        export = importlib.import_module(f"{package}.networks.export")
        import torch

        device = os.environ.get("GANFORGE_DEVICE") or (
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        self.generator, self.config = export.load_export(context.artifacts["export"], device=device)

    # The DataFrame hint only tells MLflow not to infer a schema from hints (the logged signature
    # is the contract); without a hint MLflow warns on every load.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        params = params or {}
        psi = float(params.get("psi", 1.0))
        noise_mode = str(params.get("noise_mode", "const"))
        columns = _columns(model_input)
        z_dim, c_dim = int(self.config["z_dim"]), int(self.config["c_dim"])
        latents = _present(columns.get("latent"))
        seeds = _present(columns.get("seed"))
        if latents is not None:
            z = np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in latents])
            if z.shape[1] != z_dim:
                raise ValueError(f"latent: each latent needs {z_dim} values, got {z.shape[1]}")
        elif seeds is not None:
            z = self.sampling.seeds_to_latents([int(s) for s in seeds], z_dim)
        else:
            raise ValueError(
                "input: give a 'seed' column (ints) or a 'latent' column (lists of floats)"
            )
        if len(z) > MAX_IMAGES:
            raise ValueError(f"input: {len(z)} images requested; at most {MAX_IMAGES} per call")
        labels = _present(columns.get("label"))
        labels = None if labels is None else [int(v) for v in labels]
        c = self.sampling.labels_to_onehot(
            labels, len(z), c_dim, self.config.get("class_names") or []
        )
        return self.sampling.synthesize(self.generator, z, c, psi=psi, noise_mode=noise_mode)


def _columns(model_input) -> dict:
    """DataFrame / dict of lists / list of records -> {column: list}."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        return {str(k): list(model_input[k]) for k in model_input.columns}
    if isinstance(model_input, dict):
        return {
            k: list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
            for k, v in model_input.items()
        }
    if isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        keys = {k for r in model_input for k in r}
        return {k: [r.get(k) for r in model_input] for k in keys}
    raise ValueError(
        f"input: expected a DataFrame with 'seed'/'latent'/'label' columns, got {type(model_input).__name__}"
    )


def _is_missing(value) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and value != value  # NaN from a DataFrame's missing cells


def _present(values):
    """The column's values when every row has one, None when none has; mixing is an error."""
    if values is None:
        return None
    missing = [_is_missing(v) for v in values]
    if all(missing):
        return None
    if any(missing):
        raise ValueError("input: every row needs the same columns (a seed or a latent in each row)")
    return values


set_model(GanforgeGeneratorModel())
