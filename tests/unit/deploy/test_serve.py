"""deploy.serve on a real uvicorn (127.0.0.1): answers, validation, batching that keeps pixels."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from fastapi import APIRouter, Depends
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from deploy.serve import GeneratorServer
from deploy.service import ServeConfig, admitted, require_json, run_blocking


@pytest.fixture(scope="module")
def server(loaded_cond):
    srv = GeneratorServer(loaded_cond, port=0, max_images=8).start()
    yield srv
    srv.close()


def call(url, body=None, content_type="application/json", raw=None, method=None):
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": content_type}, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def post(server, body, **kw):
    code, headers, raw = call(f"{server.url}/generate", body, **kw)
    return code, headers["Content-Type"], raw


def decode(raw: bytes) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in json.loads(raw)["images"]]
    )


def test_health_ready_info_docs_and_metrics(server):
    assert json.loads(call(f"{server.url}/health")[2]) == {"status": "ok"}
    assert json.loads(call(f"{server.url}/ready")[2]) == {"status": "ready"}
    info = json.loads(call(f"{server.url}/info")[2])
    assert info["c_dim"] == 3 and info["resolution"] == 16 and info["max_images"] == 8
    code, headers, page = call(f"{server.url}/docs")
    assert code == 200 and b"swagger" in page.lower()
    schema = json.loads(call(f"{server.url}/openapi.json")[2])
    assert "/generate" in schema["paths"] and "GenerateRequest" in json.dumps(schema)
    post(server, {"seeds": [1], "labels": 0})
    code, headers, text = call(f"{server.url}/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    text = text.decode()
    assert 'ganforge_http_requests_total{route="/generate",method="POST",status="200"}' in text
    assert 'ganforge_http_request_duration_seconds_bucket{route="/generate",le="+Inf"}' in text
    assert "ganforge_batch_images_count" in text and "ganforge_http_requests_in_flight" in text


def test_base64_images_match_the_python_api(server, loaded_cond):
    status, ctype, body = post(
        server, {"seeds": "2-4", "psi": 0.7, "labels": ["class1"], "format": "base64"}
    )
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["seeds"] == [2, 3, 4]
    np.testing.assert_array_equal(decode(body), loaded_cond.generate("2-4", psi=0.7, labels=1))


def test_png_single_image(server, loaded_cond):
    status, ctype, body = post(server, {"seeds": [5], "labels": 0})
    assert (status, ctype) == (200, "image/png")
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(body))), loaded_cond.generate([5], labels=0)[0]
    )


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        ([1, 2], 400, "dictionary"),
        ({"labels": [0]}, 400, "seeds: Field required"),
        ({"seeds": [0], "labels": [0], "size": 3}, 400, "unknown keys size"),
        ({"seeds": list(range(9)), "labels": 0}, 413, "at most 8"),
        ({"seeds": "0-4000000000", "labels": 0}, 413, "at most 8"),
        ({"seeds": [-1], "labels": 0}, 400, "seeds.0: Input should be greater"),
        ({"seeds": ["a"], "labels": 0}, 400, "seeds.0"),
        ({"seeds": {"a": 1}, "labels": 0}, 400, "seeds"),
        ({"seeds": [2**40], "labels": 0}, 400, "seeds"),
        ({"seeds": [0], "labels": 0, "psi": "high"}, 400, "psi"),
        ({"seeds": [0], "labels": 0, "psi": 9}, 400, "psi"),
        ({"seeds": [0], "labels": 0, "psi": 1e308}, 400, "psi"),
        ({"seeds": [0]}, 400, "conditional"),
        ({"seeds": [0], "labels": [7]}, 400, "out of range"),
        ({"seeds": [0], "labels": ["zebra"]}, 400, "unknown class name"),
        ({"seeds": [0, 1], "labels": [0, 1, 2]}, 400, "3 labels for 2"),
        ({"seeds": [0], "labels": [None]}, 400, "labels.0"),
        ({"seeds": [0], "labels": 0, "noise_mode": 3}, 400, "noise_mode"),
        ({"seeds": [0], "labels": 0, "format": "jpeg"}, 400, "format"),
        ({"seeds": [True], "labels": 0}, 400, "seeds"),
    ],
)
def test_malformed_requests_get_4xx_with_message(server, body, status, match):
    code, ctype, raw = post(server, body)
    assert (code, ctype) == (status, "application/json")
    assert match in json.loads(raw)["error"]


@pytest.mark.parametrize(
    ("raw", "ctype", "method", "status", "match"),
    [
        (b"{not json", "application/json", "POST", 400, "not valid JSON"),
        (b"[" * 30000 + b"]" * 30000, "application/json", "POST", 400, "not valid JSON"),
        (b'{"seeds": ' + b"9" * 4400 + b"}", "application/json", "POST", 400, "not valid JSON"),
        (b"x" * 70000, "application/json", "POST", 413, "at most 65536"),
        (b"seeds=1", "text/plain", "POST", 415, "application/json"),
        (b'{"seeds": [1]}', "application/json", "PUT", 405, "PUT not allowed"),
        (b"", "application/json", "DELETE", 405, "DELETE not allowed"),
    ],
)
def test_bad_bodies_types_and_methods_get_4xx(server, raw, ctype, method, status, match):
    code, headers, body = call(f"{server.url}/generate", raw=raw, content_type=ctype, method=method)
    assert code == status and headers["Content-Type"] == "application/json"
    assert match in json.loads(body)["error"]


def test_unknown_route_is_json_404(server):
    code, headers, body = call(f"{server.url}/nope")
    assert code == 404 and "no route /nope" in json.loads(body)["error"]


def test_concurrent_requests_are_batched_and_pixels_unchanged(loaded_uncond):
    """Requests that share a batch get the bytes they get alone and through the Python API."""
    srv = GeneratorServer(loaded_uncond, port=0, max_batch=32).start()
    srv.worker.window_s = 0.5  # wide: the requests below land in few batches even on a busy CPU
    try:
        results: dict[int, np.ndarray] = {}
        groups = [[0], [1, 2, 3], [4], [5, 6], [7, 8, 9, 10, 11], [12]]

        def one(seeds):
            code, _, body = post(srv, {"seeds": seeds, "psi": 0.5, "format": "base64"})
            assert code == 200
            for s, img in zip(seeds, decode(body)):
                results[s] = img

        threads = [threading.Thread(target=one, args=(g,)) for g in groups]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == list(range(13))
        assert srv.worker.batches_run < len(groups)
        expected = loaded_uncond.generate(range(13), psi=0.5)
        np.testing.assert_array_equal(np.stack([results[s] for s in range(13)]), expected)
        alone = [
            decode(post(srv, {"seeds": [s], "psi": 0.5, "format": "base64"})[2]) for s in (3, 9)
        ]
        np.testing.assert_array_equal(np.concatenate(alone), expected[[3, 9]])
    finally:
        srv.close()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="serve.max_concurrency"):
        ServeConfig(max_concurrency=0)
    with pytest.raises(ValueError, match="serve.read_timeout_s"):
        ServeConfig(read_timeout_s=float("nan"))


class FlipRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seed: int = Field(ge=0, le=1000)


def flip_router(generator, config) -> APIRouter:
    """What another room's endpoint looks like (e.g. /inpaint): its own module and model."""
    router = APIRouter()

    @router.post("/flip", dependencies=[Depends(require_json), Depends(admitted)])
    async def flip(body: FlipRequest) -> dict:
        image = await run_blocking(generator.generate, [body.seed])
        return {"sum": int(image[:, :, ::-1].sum())}

    return router


def test_other_modules_add_endpoints_with_the_shared_limits(loaded_uncond, monkeypatch):
    from deploy import serve

    monkeypatch.setattr(serve, "EXTRA_ROUTERS", (f"{__name__}:flip_router",))
    config = ServeConfig(port=0, max_body_bytes=100)
    routers = tuple(serve.extra_routers(loaded_uncond, config))
    srv = GeneratorServer(loaded_uncond, config=config, routers=routers).start()
    try:
        code, _, body = call(f"{srv.url}/flip", {"seed": 3})
        assert code == 200 and json.loads(body)["sum"] == int(loaded_uncond.generate([3]).sum())
        for raw, ctype, status, match in [
            (b'{"seed": -1}', "application/json", 400, "seed"),
            (b'{"seed": 1, "x": 2}', "application/json", 400, "unknown keys x"),
            (b"seed=1", "text/plain", 415, "application/json"),
            (b'{"seed": 1}' + b" " * 200, "application/json", 413, "at most 100"),
        ]:
            code, headers, body = call(f"{srv.url}/flip", raw=raw, content_type=ctype)
            assert (code, match in json.loads(body)["error"]) == (status, True), body
        metrics = call(f"{srv.url}/metrics")[2].decode()
        assert 'route="/flip",method="POST",status="200"' in metrics
        assert "/flip" in json.loads(call(f"{srv.url}/openapi.json")[2])["paths"]
    finally:
        srv.close()
