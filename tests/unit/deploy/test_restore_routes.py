"""POST /inpaint and /upscale on a real uvicorn: good requests 200, malformed ones 4xx."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from deploy.restore_routes import restore_router
from deploy.serve import GeneratorServer
from tests.unit.deploy.test_serve import call


@pytest.fixture(scope="module")
def server(loaded_uncond):
    srv = GeneratorServer(
        loaded_uncond, port=0, routers=(restore_router(loaded_uncond, max_steps=50),)
    ).start()
    yield srv
    srv.close()


def b64png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_inpaint_and_upscale_answer_200(server, loaded_uncond):
    image = loaded_uncond.generate([2])[0]
    mask = np.zeros((16, 16), np.uint8)
    mask[5:11, 5:11] = 255
    code, headers, raw = call(
        f"{server.url}/inpaint", {"image": b64png(image), "mask": b64png(mask), "steps": 3}
    )
    assert code == 200 and headers["Content-Type"] == "image/png"
    filled = np.asarray(Image.open(io.BytesIO(raw)))
    np.testing.assert_array_equal(filled[mask == 0], image[mask == 0])
    body = {"image": b64png(image[::2, ::2].copy()), "steps": 3, "format": "base64"}
    code, headers, raw = call(f"{server.url}/upscale", body)
    answer = json.loads(raw)
    assert code == 200 and answer["height"] == 16 and answer["distance"] == "pixel-multiscale"
    assert "/inpaint" in json.loads(call(f"{server.url}/openapi.json")[2])["paths"]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/inpaint", {"image": "x"}, 400, "mask"),
        ("/inpaint", {"image": "!!notbase64", "mask": "AAAA"}, 400, "base64"),
        (
            "/inpaint",
            {"image": base64.b64encode(b"text").decode(), "mask": "AAAA"},
            400,
            "not a readable image",
        ),
        ("/upscale", {"image": "x", "extra": 1}, 400, "unknown keys extra"),
        ("/upscale", {"image": "x", "steps": 0}, 400, "steps"),
        ("/upscale", {"image": "x", "steps": 51}, 400, "more than this server allows"),
        ("/upscale", {"image": "x", "steps": "3"}, 400, "steps"),
        ("/upscale", {"image": "x", "label": 2}, 400, "image"),
    ],
)
def test_malformed_requests_are_4xx(server, path, body, status, message):
    code, _, raw = call(f"{server.url}{path}", body)
    assert code == status and message in json.loads(raw)["error"], raw


def test_wrong_sizes_and_labels_are_400(server):
    small = b64png(np.zeros((5, 5, 3), np.uint8))
    code, _, raw = call(f"{server.url}/upscale", {"image": small, "steps": 2})
    assert code == 400 and "whole number" in json.loads(raw)["error"]
    full = b64png(np.zeros((16, 16, 3), np.uint8))
    code, _, raw = call(f"{server.url}/inpaint", {"image": full, "mask": small, "steps": 2})
    assert code == 400 and "16x16" in json.loads(raw)["error"]
    code, _, raw = call(f"{server.url}/upscale", {"image": full, "steps": 2, "label": 1})
    assert code == 400 and "unconditional" in json.loads(raw)["error"]
    code, _, _ = call(f"{server.url}/inpaint", raw=b"{}", body=None, content_type="text/plain")
    assert code == 415


def test_ganforge_serve_mounts_the_restore_routes(loaded_uncond):
    from deploy import serve

    routers = serve.extra_routers(loaded_uncond, None)
    assert {"/inpaint", "/upscale"} <= {r.path for router in routers for r in router.routes}
