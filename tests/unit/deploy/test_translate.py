"""Translator deploy path: export -> load -> size policies -> registry -> pyfunc in a fresh process
without ganforge -> `ganforge translate` (real MLflow sqlite store, real files)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deploy import registry
from deploy.translate import load_translator, translate_files
from training.networks.cyclegan import ResnetGenerator
from training.networks.export import ExportError, read_export_config, save_translator_export
from training.networks.translation import TranslationInputError

KWARGS = {"in_channels": 3, "out_channels": 3, "ngf": 4, "n_blocks": 1, "resolution": 16}


def make_translator_export(out: Path, seed: int = 0, metrics: dict | None = None) -> Path:
    torch.manual_seed(seed)
    generators = {"a2b": ResnetGenerator(**KWARGS), "b2a": ResnetGenerator(**KWARGS)}
    with torch.no_grad():  # larger weights than the init so outputs differ visibly from inputs
        for g in generators.values():
            for p in g.parameters():
                p.mul_(10)
    return save_translator_export(
        out,
        generators,
        family="cyclegan",
        kwargs={"a2b": KWARGS, "b2a": KWARGS},
        resolution=16,
        channels=3,
        domains={"A": {"dataset": "a"}, "B": {"dataset": "b"}},
        meta={"kimg": 1.0, "metrics": metrics or {}},
    )


@pytest.fixture(scope="module")
def translator_export(tmp_path_factory) -> Path:
    return make_translator_export(tmp_path_factory.mktemp("translator"), metrics={"fid_a2b": 50.0})


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_load_and_size_policies(translator_export):
    t = load_translator(translator_export)
    assert t.directions == ["a2b", "b2a"] and t.resolution == 16
    img = _image(20, 28)
    own = t.translate(img, "a2b")  # auto: multiples of 4 -> own size
    assert own.shape == (20, 28, 3) and own.dtype == np.uint8
    assert not np.array_equal(t.translate(img, "a2b"), t.translate(img, "b2a"))
    odd = _image(21, 30)
    assert t.translate(odd, "a2b", size="own").shape == (21, 30, 3)  # padded and cropped back
    assert t.translate(odd, "a2b").shape == (16, 16, 3)  # auto -> native for odd sizes
    assert t.translate(img, "a2b", size="native").shape == (16, 16, 3)
    # the same image as PNG bytes, base64 text and a grayscale array all work
    np.testing.assert_array_equal(t.translate_bytes(_png(img), "a2b"), own)
    np.testing.assert_array_equal(
        t.translate_bytes(base64.b64encode(_png(img)).decode(), "a2b"), own
    )
    assert t.translate(img[:, :, 0], "a2b").shape == (20, 28, 3)
    for bad, match in (
        (lambda: t.translate(img, "x2y"), "direction"),
        (lambda: t.translate(img, "a2b", size="big"), "size"),
        (lambda: t.translate_bytes(b"not an image", "a2b"), "not a readable image"),
        (lambda: t.translate_bytes("%%%", "a2b"), "base64"),
        (lambda: t.translate(img.astype(np.float32), "a2b"), "uint8"),
    ):
        with pytest.raises(TranslationInputError, match=match):
            bad()
    with pytest.raises(ExportError, match="translator"):
        read_export_config(translator_export)  # a generator reader says what this is


def test_translate_files_keeps_folders_and_skips_bad_images(translator_export, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_image(16, 16, 1)).save(src / "one.jpg", quality=95)
    Image.fromarray(_image(24, 32, 2)).save(src / "sub" / "two.png")
    (src / "broken.png").write_bytes(b"nope")
    (src / ".hidden.png").write_bytes(b"nope")
    t = load_translator(translator_export)
    report = translate_files(t, [src], tmp_path / "out", direction="b2a")
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in report.written)
    assert names == ["in/one.png", "in/sub/two.png"]
    assert [Path(p).name for p, _ in report.skipped] == ["broken.png"]
    two = np.asarray(Image.open(tmp_path / "out" / "in" / "sub" / "two.png"))
    np.testing.assert_array_equal(two, t.translate(_image(24, 32, 2), "b2a"))


FRESH = textwrap.dedent(
    """
    import base64, io, json, sys
    # ganforge must not be needed: make its packages unimportable in this process
    for name in ("training", "deploy", "pipeline", "data_prep"):
        sys.modules[name] = None
    import mlflow, numpy as np, pandas as pd
    from PIL import Image
    mlflow.set_tracking_uri(sys.argv[1])
    model = mlflow.pyfunc.load_model(sys.argv[2])
    image = np.asarray(Image.open(sys.argv[3]))
    buf = io.BytesIO(); Image.fromarray(image).save(buf, format="PNG")
    by_bytes = model.predict(pd.DataFrame({"image": [buf.getvalue()]}), params={"direction": "a2b"})
    by_b64 = model.predict(
        pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode()]}),
        params={"direction": "a2b"},
    )
    by_array = model.predict(image[None], params={"direction": "b2a", "size": "native"})
    try:
        model.predict(pd.DataFrame({"image": [b"junk"]}))
        bad = "accepted"
    except Exception as exc:
        bad = str(exc)
    np.save(sys.argv[4], np.stack([by_bytes[0], by_b64[0]]))
    np.save(sys.argv[5], by_array)
    print(json.dumps({"bad": bad, "shape": list(by_bytes.shape)}))
    """
)


def test_register_pyfunc_in_a_fresh_process_and_translate_cli(
    translator_export, tracking_uri, tmp_path
):
    info = registry.register_export(
        translator_export, model_name="tiny-translator", alias="champion", tracking_uri=tracking_uri
    )
    assert info.promoted
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tags = client.get_model_version_by_alias("tiny-translator", "champion").tags
    assert tags["kind"] == "translator" and tags["directions"] == "a2b,b2a"
    assert tags["metric.fid_a2b"] == "50.0"

    image = _image(20, 24, 5)
    Image.fromarray(image).save(tmp_path / "x.png")
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            tracking_uri,
            "models:/tiny-translator@champion",
            str(tmp_path / "x.png"),
            str(tmp_path / "a2b.npy"),
            str(tmp_path / "b2a.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 20, 24, 3]
    assert "not a readable image" in result["bad"]
    t = load_translator(translator_export)
    a2b = np.load(tmp_path / "a2b.npy")
    np.testing.assert_array_equal(a2b[0], t.translate(image, "a2b"))
    np.testing.assert_array_equal(a2b[1], a2b[0])
    np.testing.assert_array_equal(
        np.load(tmp_path / "b2a.npy")[0], t.translate(image, "b2a", size="native")
    )

    # ganforge translate from the registry: files and folders in, PNGs out
    from pipeline.cli import main

    (tmp_path / "folder").mkdir()
    Image.fromarray(_image(16, 16, 6)).save(tmp_path / "folder" / "y.png")
    code = main(
        [
            "translate",
            "--model",
            "models:/tiny-translator@champion",
            "--tracking-uri",
            tracking_uri,
            "--direction",
            "a2b",
            str(tmp_path / "x.png"),
            str(tmp_path / "folder"),
            "--out",
            str(tmp_path / "translated"),
            "--no-progress",
        ]
    )
    assert code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "translated" / "x.png")), a2b[0])
    assert (tmp_path / "translated" / "folder" / "y.png").is_file()
    bad = main(
        [
            "translate",
            "--model",
            str(translator_export),
            "--direction",
            "c2d",
            str(tmp_path / "x.png"),
            "--out",
            str(tmp_path / "t2"),
        ]
    )
    assert bad == 2


def test_promote_if_better_for_translators(tmp_path, tracking_uri):
    first = make_translator_export(tmp_path / "v1", metrics={"cycle_distance": 0.2})
    worse = make_translator_export(tmp_path / "v2", seed=1, metrics={"cycle_distance": 0.3})
    better = make_translator_export(tmp_path / "v3", seed=2, metrics={"cycle_distance": 0.1})
    kw = {"model_name": "tr-promote", "alias": "champion", "tracking_uri": tracking_uri}
    assert registry.register_export(first, promote_if_better="cycle_distance", **kw).promoted
    assert not registry.register_export(worse, promote_if_better="cycle_distance", **kw).promoted
    info = registry.register_export(better, promote_if_better="cycle_distance", **kw)
    assert info.promoted and info.version == "3"


# -- POST /translate ---------------------------------------------------------------------------


def _call(url, data=None, content_type="application/json", method="POST"):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": content_type}, method=method
    )
    if data is not None and len(data) > 2**19:
        return _call_headers_first(url, data, content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def _call_headers_first(url, data, content_type):
    """A large body: send the headers, then the body only if the server has not answered yet.
    A server that refuses by Content-Length answers 413 at once and closes the connection; a
    client still writing the body would then see a broken pipe instead of the answer."""
    import http.client
    import select
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", parts.path + (f"?{parts.query}" if parts.query else ""))
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        readable, _, _ = select.select([conn.sock], [], [], 2.0)
        if not readable:
            try:
                conn.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
        resp = conn.getresponse()
        return resp.status, resp.headers["Content-Type"], resp.read()
    finally:
        conn.close()


def test_translate_endpoint_good_200_malformed_4xx(translator_export):
    from deploy.service import ServeConfig
    from deploy.translate_serve import TranslatorServer

    t = load_translator(translator_export)
    config = ServeConfig(port=0, max_body_bytes=2**20)
    server = TranslatorServer(t, config=config).start()
    try:
        url = f"{server.url}/translate"
        image = _image(20, 24, 7)
        png = _png(image)
        # the image as the body, options as query parameters
        code, ctype, body = _call(f"{url}?direction=b2a", png, "image/png")
        assert code == 200 and ctype == "image/png"
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(body))), t.translate(image, "b2a")
        )
        # JSON with base64, answered as JSON
        req = {"image": base64.b64encode(png).decode(), "size": "native", "format": "base64"}
        code, ctype, body = _call(url, json.dumps(req).encode())
        assert code == 200 and ctype == "application/json"
        answer = json.loads(body)
        assert (answer["height"], answer["width"], answer["direction"]) == (16, 16, "a2b")
        out = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["image"]))))
        np.testing.assert_array_equal(out, t.translate(image, "a2b", size="native"))
        info = json.loads(_call(f"{server.url}/info", method="GET")[2])
        assert info["kind"] == "translator" and info["directions"] == ["a2b", "b2a"]

        big = io.BytesIO()
        Image.new("RGB", (5000, 4000)).save(big, format="PNG")
        malformed = [
            (b"", "image/png", 400),
            (b"not a png", "image/png", 400),
            (png, "text/plain", 415),
            (b"{not json", "application/json", 400),
            (json.dumps({"image": "%%%"}).encode(), "application/json", 400),
            (
                json.dumps({"image": base64.b64encode(b"xx").decode()}).encode(),
                "application/json",
                400,
            ),
            (json.dumps({"image": 5}).encode(), "application/json", 400),
            (json.dumps({"direction": "a2b"}).encode(), "application/json", 400),
            (
                json.dumps({"image": req["image"], "direction": "c2d"}).encode(),
                "application/json",
                400,
            ),
            (json.dumps({"image": req["image"], "colour": 1}).encode(), "application/json", 400),
            (json.dumps([1, 2]).encode(), "application/json", 400),
            (big.getvalue(), "image/png", 413),
            (b"x" * (2**20 + 10), "image/png", 413),
        ]
        for data, content_type, expected in malformed:
            code, ctype, body = _call(url, data, content_type)
            assert code == expected, (data[:40], content_type, code, body[:200])
            assert ctype == "application/json" and json.loads(body)["error"]
        code, _, body = _call(f"{url}?direction=sideways", png, "image/png")
        assert code == 400 and b"direction" in body
        code, _, body = _call(f"{url}?bogus=1", png, "image/png")
        assert code == 400 and b"bogus" in body
    finally:
        server.close()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_onnx_and_torchscript_export_match_pytorch(translator_export, tmp_path, fmt):
    from pipeline.cli import main

    out = tmp_path / f"t.{'onnx' if fmt == 'onnx' else 'pt'}"
    code = main(
        [
            "export",
            "--model",
            str(translator_export),
            "--format",
            fmt,
            "--direction",
            "b2a",
            "--batch",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.is_file()
    from deploy.translator_export import run_translator_export

    t = load_translator(translator_export)
    images = np.stack([_image(16, 16, s) for s in range(3)])
    got = run_translator_export(out, images)
    expected = np.stack([t.translate(x, "b2a") for x in images])
    assert got.shape == (3, 16, 16, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 2
    if fmt == "torchscript":  # any size that is a multiple of 4
        big = _image(24, 32, 9)
        np.testing.assert_allclose(
            run_translator_export(out, big[None])[0].astype(int),
            t.translate(big, "b2a").astype(int),
            atol=2,
        )
