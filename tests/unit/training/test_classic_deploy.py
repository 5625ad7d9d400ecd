"""Each classic family: export -> registry (real sqlite MLflow store) -> `generate` / pyfunc."""

from __future__ import annotations

import argparse
import copy

import numpy as np
import pytest
import torch
from PIL import Image

from data_prep.manifest import load_manifest
from deploy import registry
from deploy.generator import load_generator
from pipeline.commands import generate as generate_cmd
from pipeline.config import load_config
from tests.conftest import tiny_overrides
from training.families import get_family


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'mlflow.db').as_posix()}"


def _export(tmp_path, manifest_dir, family_name: str, conditional: bool):
    kind = {"wgan": "wgan", "wgan-gp": "wgan-gp"}.get(family_name, "bce")
    overrides = {
        "model.family": family_name,
        "model.conditional": conditional,
        "model.z_dim": 8,
        "model.mlp_hidden": 32,
        "model.channel_base": 64,
        "model.channel_max": 16,
        "loss.kind": kind,
    }
    cfg = load_config("digits", tiny_overrides(tmp_path, manifest_dir, **overrides))
    torch.manual_seed(0)
    family = get_family(family_name)(
        cfg, {"train": load_manifest(str(manifest_dir))}, torch.device("cpu")
    )
    nets = {name: net.module for name, net in family.build_networks().items()}
    with torch.no_grad():  # a trained-looking G: BatchNorm affine away from its init
        for p in nets["generator"].parameters():
            p.add_(0.05 * torch.randn_like(p))
    nets["g_ema"] = copy.deepcopy(nets["generator"]).eval()
    return family.export(nets, tmp_path / "export", {"kimg": 1.0, "metrics": {}})


@pytest.mark.parametrize(
    ("family_name", "conditional"),
    [("mlp", False), ("dcgan", True), ("wgan", False), ("wgan-gp", True)],
)
def test_export_registry_generate(tmp_path, digits_shards, tracking_uri, family_name, conditional):
    import mlflow
    import pandas as pd

    export = _export(tmp_path, digits_shards, family_name, conditional)
    local = load_generator(export)
    labels = 3 if conditional else None
    expected = local.generate("0-3", labels=labels)
    assert expected.shape == (4, 16, 16, 3) and expected.dtype == np.uint8
    assert expected.std() > 0  # not a blank image
    name = f"classic-{family_name}"
    info = registry.register_export(
        export, model_name=name, alias="champion", tracking_uri=tracking_uri
    )
    assert info.promoted
    # `ganforge generate --model models:/NAME@champion` writes the same images
    parser = argparse.ArgumentParser()
    generate_cmd.add_arguments(parser)
    argv = ["--model", f"models:/{name}@champion", "--seeds", "0-3", "--separate"]
    argv += ["--out", str(tmp_path / "imgs"), "--tracking-uri", tracking_uri]
    if conditional:
        argv += ["--labels", "3"]
    assert generate_cmd.main(parser.parse_args(argv)) == 0
    for seed in range(4):
        image = np.asarray(Image.open(tmp_path / "imgs" / f"seed{seed:04d}.png").convert("RGB"))
        np.testing.assert_array_equal(image, expected[seed])
    # the pyfunc model (vendored network code, no ganforge import) agrees
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    frame = {"seed": [0, 1, 2, 3]}
    if conditional:
        frame["label"] = [3, 3, 3, 3]
    np.testing.assert_array_equal(model.predict(pd.DataFrame(frame)), expected)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize(("family_name", "conditional"), [("mlp", True), ("dcgan", False)])
def test_onnx_and_torchscript_export_match_pytorch(
    tmp_path, digits_shards, fmt, family_name, conditional
):
    from deploy.export import export_generator, verify_export

    export = _export(tmp_path, digits_shards, family_name, conditional)
    loaded = load_generator(export)
    path = export_generator(loaded, tmp_path / f"g.{fmt}", fmt, psi=0.8, batch=4)
    stats = verify_export(loaded, path, seeds=[0, 1, 2, 3], psi=0.8)
    assert stats["max_abs_diff"] <= 2


def test_serve_a_conditional_dcgan(tmp_path, digits_shards):
    import base64
    import io
    import json
    import urllib.request

    from deploy.serve import GeneratorServer

    loaded = load_generator(_export(tmp_path, digits_shards, "dcgan", True))
    server = GeneratorServer(loaded, port=0, max_images=8).start()
    try:
        body = {"seeds": "2-4", "labels": [1], "format": "base64"}
        request = urllib.request.Request(
            f"{server.url}/generate",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 200
            images = json.loads(resp.read())["images"]
    finally:
        server.close()
    got = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in images])
    # served in batches of any composition: the same pixels (eval-mode BatchNorm)
    np.testing.assert_array_equal(got, loaded.generate("2-4", labels=1))
