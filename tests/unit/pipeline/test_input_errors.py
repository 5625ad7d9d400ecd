"""Bad inputs found by the fault probe (issue 16) are one-line errors, exit 2, in seconds."""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.cli import main


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", ".inf"])
def test_non_finite_numbers_name_the_key(capsys, tmp_path, value):
    err = _one_line_error(
        capsys, ["train", "--set", f"train.total_kimg={value}", "--set", f"work_dir={tmp_path}"]
    )
    assert "train.total_kimg: expected a finite number" in err


def test_manifest_given_as_a_file(capsys, tmp_path):
    for name in ("shard-list.txt", "train-000000.tar"):
        (tmp_path / name).write_text("x")
        err = _one_line_error(
            capsys,
            ["train", "--set", f"data.manifest={tmp_path / name}", "--set", f"work_dir={tmp_path}"],
        )
        assert err.startswith("ganforge train: error: data.manifest:") and "is a file" in err


def _dead_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--model", "models:/gan@champion", "--seeds", "0-3"],
        ["register", "{export}", "--name", "gan"],
    ],
)
def test_dead_tracking_server_fails_within_seconds(capsys, tmp_path, argv):
    from tests.unit.deploy.conftest import make_export

    export = make_export(tmp_path / "export") if "{export}" in argv else None
    uri = _dead_uri()
    argv = [str(export) if a == "{export}" else a for a in argv]
    started = time.monotonic()
    err = _one_line_error(capsys, [*argv, "--tracking-uri", uri, "--work-dir", str(tmp_path)])
    assert time.monotonic() - started < 30
    assert f"MLflow tracking server {uri} is not reachable" in err


def test_local_export_needs_no_tracking_server(tmp_path, capsys):
    from tests.unit.deploy.conftest import make_export

    export = make_export(tmp_path / "export")
    out = tmp_path / "grid.png"
    code = main(
        ["generate", "--model", str(export), "--seeds", "0-1", "--out", str(out)]
        + ["--tracking-uri", _dead_uri(), "--work-dir", str(tmp_path)]
    )
    assert code == 0 and out.is_file()
