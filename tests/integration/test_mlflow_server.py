"""Registry + deploy against a real ``mlflow server`` (sqlite backend, 127.0.0.1, a free port).

One server and one registered model per module. Covers: `ganforge register` + alias, loading
``models:/NAME@champion`` with ``mlflow.pyfunc.load_model`` in a fresh interpreter that cannot
import ganforge, identical images for identical seeds through every path (Python API, CLI,
pyfunc, `ganforge serve`, `mlflow models serve`, ONNX), and the HTTP server's answers to
malformed requests.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.unit.deploy.conftest import make_export

pytestmark = pytest.mark.slow

SEEDS = [0, 1, 2, 3]
PSI = 0.7
LABELS = [2, 0, 1, 2]
MODEL = "gan-it"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    raise TimeoutError(f"{what} did not answer {url} within {timeout:.0f}s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started here (its own session) and its children."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def start(cmd: list[str], log: Path, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )


def start_mlflow_server(root: Path) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` (sqlite backend, local artifacts, 127.0.0.1, a free port), ready."""
    port = free_port()
    proc = start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        root / "server.log",
        cwd=root,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, 90, "mlflow server")
    except Exception:
        stop(proc)
        raise RuntimeError((root / "server.log").read_text()[-3000:]) from None
    return proc, uri


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    stop(proc)


@pytest.fixture(scope="module")
def registered(mlflow_server, tmp_path_factory):
    """`ganforge register` of a conditional 16 px export, alias champion -> (export dir, images)."""
    from deploy.generator import load_generator
    from pipeline.cli import main

    export = make_export(
        tmp_path_factory.mktemp("it-export"), c_dim=3, seed=3, metrics={"fid50k": 12.0}
    )
    assert (
        main(
            [
                "register",
                str(export),
                "--name",
                MODEL,
                "--alias",
                "champion",
                "--tracking-uri",
                mlflow_server,
            ]
        )
        == 0
    )
    expected = load_generator(export).generate(SEEDS, psi=PSI, labels=LABELS)
    return export, expected


def test_register_and_alias_on_the_server(mlflow_server, registered):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1"
    assert version.tags["family"] == "stylegan2" and version.tags["metric.fid50k"] == "12.0"
    # A second registration without an alias leaves champion where it is.
    from deploy.registry import register_export, set_alias

    info = register_export(registered[0], model_name=MODEL, tracking_uri=mlflow_server)
    assert info.version == "2"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    set_alias(MODEL, "candidate", info.version, tracking_uri=mlflow_server)
    assert str(client.get_model_version_by_alias(MODEL, "candidate").version) == "2"


FRESH_SCRIPT = """
import importlib.util, sys
sys.path.append(SITE)  # site-packages without its .pth files: the editable ganforge finder lives in one
for name in ("deploy", "pipeline", "training"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable: ganforge leaked in"
import mlflow, numpy as np, pandas as pd
model = mlflow.pyfunc.load_model("models:/%s@champion")
images = model.predict(pd.DataFrame({"seed": %r, "label": %r}), params={"psi": %r})
for name in ("deploy", "pipeline", "training"):
    assert name not in sys.modules, name
np.save(OUT, images)
print("shipped code:", sorted(m for m in sys.modules if m.startswith("ganforge")))
"""


def test_pyfunc_loads_in_a_fresh_process_without_ganforge(mlflow_server, registered, tmp_path):
    out = tmp_path / "images.npy"
    script = f"SITE = {sysconfig.get_paths()['purelib']!r}\nOUT = {str(out)!r}\n" + FRESH_SCRIPT % (
        MODEL,
        SEEDS,
        LABELS,
        PSI,
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "OMP_NUM_THREADS": "1",
    }
    # -I: no PYTHONPATH, no user site, no script dir on sys.path; -S: no site (no .pth files);
    # cwd is an empty temp dir, so the repository is nowhere on sys.path.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ganforge_pyfunc_" in result.stdout
    np.testing.assert_array_equal(np.load(out), registered[1])


def test_same_images_through_api_cli_rest_and_onnx(mlflow_server, registered, tmp_path):
    from deploy.export import export_inputs, run_export
    from deploy.generator import load_generator
    from deploy.serve import GeneratorServer
    from pipeline.cli import main

    expected = registered[1]
    ref = f"models:/{MODEL}@champion"
    # Python API
    loaded = load_generator(ref, tracking_uri=mlflow_server)
    np.testing.assert_array_equal(loaded.generate(SEEDS, psi=PSI, labels=LABELS), expected)
    np.testing.assert_array_equal(
        loaded.generate(SEEDS, psi=PSI, labels=[f"class{i}" for i in LABELS]), expected
    )
    # CLI, one file per seed (one label per seed)
    assert (
        main(
            [
                "generate",
                "--model",
                ref,
                "--tracking-uri",
                mlflow_server,
                "--seeds",
                "0-3",
                "--psi",
                str(PSI),
                "--labels",
                ",".join(map(str, LABELS)),
                "--separate",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    cli = np.stack([np.asarray(Image.open(tmp_path / "cli" / f"seed{s:04d}.png")) for s in SEEDS])
    np.testing.assert_array_equal(cli, expected)
    # REST (`ganforge serve`'s server, in-process)
    server = GeneratorServer(loaded, port=0).start()
    try:
        body = json.dumps(
            {"seeds": SEEDS, "psi": PSI, "labels": LABELS, "format": "base64"}
        ).encode()
        req = urllib.request.Request(
            f"{server.url}/generate", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
    finally:
        server.close()
    rest = np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in answer["images"]]
    )
    np.testing.assert_array_equal(rest, expected)
    # ONNX, exported from the registry model (within one uint8 level: ONNX Runtime's float order)
    onnx_path = tmp_path / "g.onnx"
    assert (
        main(
            [
                "export",
                "--model",
                ref,
                "--tracking-uri",
                mlflow_server,
                "--format",
                "onnx",
                "--out",
                str(onnx_path),
            ]
        )
        == 0
    )
    got = run_export(onnx_path, export_inputs(loaded, SEEDS, PSI, LABELS))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def post_json(url: str, body: bytes, content_type: str = "application/json"):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ganforge_serve_process_answers_and_rejects(mlflow_server, registered, tmp_path):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = start(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "serve",
            "--model",
            f"models:/{MODEL}@champion",
            "--tracking-uri",
            mlflow_server,
            "--port",
            str(port),
            "--max-images",
            "8",
        ],
        tmp_path / "serve.log",
        cwd=Path(__file__).resolve().parents[2],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/health", proc, 120, "ganforge serve")
        except Exception:
            raise RuntimeError((tmp_path / "serve.log").read_text()[-3000:]) from None
        status, body = post_json(
            f"{url}/generate", json.dumps({"seeds": [1], "psi": PSI, "labels": [0]}).encode()
        )
        assert status == 200
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), registered[1][1])
        bad = [
            (b"not json", 400, "not valid JSON"),
            (b'{"seeds": [0]}', 400, "conditional"),
            (b'{"seeds": "0-99", "labels": 0}', 413, "at most 8"),
            (b'{"seeds": [0], "labels": 0, "psi": "x"}', 400, "psi"),
            (b'{"seeds": [0], "labels": 5}', 400, "out of range"),
            (b'{"seed": [0]}', 400, "unknown keys"),
        ]
        for raw, code, message in bad:
            status, body = post_json(f"{url}/generate", raw)
            assert (status, message in json.loads(body)["error"]) == (code, True), (
                raw,
                status,
                body,
            )
    finally:
        stop(proc)


def test_mlflow_models_serve_on_the_pyfunc(mlflow_server, registered, tmp_path):
    port = free_port()
    # `mlflow models serve` execs `uvicorn` from PATH: the interpreter's own bin folder (the
    # venv) must be on it, as it is for a user with the venv activated
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "OMP_NUM_THREADS": "1",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    proc = start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        tmp_path / "models-serve.log",
        cwd=tmp_path,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/ping", proc, 150, "mlflow models serve")
        except Exception:
            raise RuntimeError((tmp_path / "models-serve.log").read_text()[-3000:]) from None
        records = [{"seed": s, "label": c} for s, c in zip(SEEDS, LABELS)]
        status, body = post_json(
            f"{url}/invocations",
            json.dumps({"dataframe_records": records, "params": {"psi": PSI}}).encode(),
        )
        assert status == 200, body[:500]
        images = np.asarray(json.loads(body)["predictions"], dtype=np.uint8)
        np.testing.assert_array_equal(images, registered[1])
        status, body = post_json(
            f"{url}/invocations", json.dumps({"dataframe_records": [{"seed": 0}]}).encode()
        )
        assert 400 <= status < 600 and b"conditional" in body
    finally:
        stop(proc)
