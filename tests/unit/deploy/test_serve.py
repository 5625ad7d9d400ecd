"""deploy.serve: the HTTP server's answers, validation and request batching."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from deploy.serve import GeneratorServer


@pytest.fixture(scope="module")
def server(loaded_cond):
    srv = GeneratorServer(loaded_cond, port=0, max_images=8).start()
    yield srv
    srv.close()


def post(server, body, content_type="application/json", raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{server.url}/generate", data=data, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_health_and_info(server):
    with urllib.request.urlopen(f"{server.url}/health", timeout=10) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
    with urllib.request.urlopen(f"{server.url}/info", timeout=10) as resp:
        info = json.loads(resp.read())
    assert info["c_dim"] == 3 and info["resolution"] == 16 and info["max_images"] == 8


def test_base64_images_match_the_python_api(server, loaded_cond):
    status, ctype, body = post(
        server, {"seeds": "2-4", "psi": 0.7, "labels": ["class1"], "format": "base64"}
    )
    assert (status, ctype) == (200, "application/json")
    answer = json.loads(body)
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in answer["images"]]
    )
    assert answer["seeds"] == [2, 3, 4]
    np.testing.assert_array_equal(images, loaded_cond.generate("2-4", psi=0.7, labels=1))


def test_png_single_image(server, loaded_cond):
    status, ctype, body = post(server, {"seeds": [5], "labels": 0})
    assert (status, ctype) == (200, "image/png")
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(body))), loaded_cond.generate([5], labels=0)[0]
    )


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        ([1, 2], 400, "JSON object"),
        ({"labels": [0]}, 400, "seeds: required"),
        ({"seeds": [0], "labels": [0], "size": 3}, 400, "unknown keys size"),
        ({"seeds": list(range(9)), "labels": 0}, 413, "at most 8"),
        ({"seeds": "0-4000000000", "labels": 0}, 413, "at most 8"),
        ({"seeds": [-1], "labels": 0}, 400, "seeds"),
        ({"seeds": ["a"], "labels": 0}, 400, "seeds"),
        ({"seeds": {"a": 1}, "labels": 0}, 400, "seeds"),
        ({"seeds": [0], "labels": 0, "psi": "high"}, 400, "psi"),
        ({"seeds": [0], "labels": 0, "psi": 9}, 400, "psi"),
        ({"seeds": [0]}, 400, "conditional"),
        ({"seeds": [0], "labels": [7]}, 400, "out of range"),
        ({"seeds": [0], "labels": ["zebra"]}, 400, "unknown class name"),
        ({"seeds": [0, 1], "labels": [0, 1, 2]}, 400, "3 labels for 2"),
        ({"seeds": [0], "labels": [None]}, 400, "labels"),
        ({"seeds": [0], "labels": 0, "noise_mode": 3}, 400, "noise_mode"),
        ({"seeds": [0], "labels": 0, "format": "jpeg"}, 400, "format"),
    ],
)
def test_malformed_requests_get_4xx_with_message(server, body, status, match):
    code, ctype, raw = post(server, body)
    assert (code, ctype) == (status, "application/json")
    assert match in json.loads(raw)["error"]


def test_not_json_wrong_type_and_routes(server):
    code, _, raw = post(server, None, raw=b"{not json")
    assert code == 400 and "not valid JSON" in json.loads(raw)["error"]
    code, _, _ = post(server, None, content_type="text/plain", raw=b"seeds=1")
    assert code == 415
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server.url}/nope", timeout=10)
    assert err.value.code == 404


def test_concurrent_requests_are_batched(loaded_uncond):
    srv = GeneratorServer(loaded_uncond, port=0, max_batch=32).start()
    # A wide batching window, so the threads below land in one batch even on a busy CPU.
    srv.worker.window_s = 0.5
    try:
        results = {}

        def call(seed):
            code, _, body = post(srv, {"seeds": [seed], "psi": 0.5, "format": "base64"})
            assert code == 200
            results[seed] = np.asarray(
                Image.open(io.BytesIO(base64.b64decode(json.loads(body)["images"][0])))
            )

        threads = [threading.Thread(target=call, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == list(range(6))
        assert srv.worker.batches_run < 6
        expected = loaded_uncond.generate(range(6), psi=0.5)
        np.testing.assert_array_equal(np.stack([results[s] for s in range(6)]), expected)
    finally:
        srv.close()
