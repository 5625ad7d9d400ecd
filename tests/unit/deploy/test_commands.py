"""`ganforge register | generate | export` (pipeline/commands), run in-process."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from pipeline.commands import export as export_cmd
from pipeline.commands import generate as generate_cmd
from pipeline.commands import register as register_cmd


def run(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.main(parser.parse_args(argv))


def test_register_then_generate_grid_and_separate(
    export_cond, loaded_cond, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "export").symlink_to(export_cond, target_is_directory=True)
    # A run directory works as well as its export/ folder; the default store is work/mlflow.db.
    assert (
        run(
            register_cmd,
            ["--export", str(run_dir), "--name", "cli", "--alias", "champion", "--tag", "who=me"],
        )
        == 0
    )
    assert (tmp_path / "work" / "mlflow.db").is_file()
    assert "models:/cli@champion" in capsys.readouterr().out

    assert (
        run(
            generate_cmd,
            [
                "--model",
                "models:/cli@champion",
                "--seeds",
                "0-3",
                "--psi",
                "0.7",
                "--labels",
                "class2",
                "--cols",
                "2",
                "--out",
                "grid.png",
            ],
        )
        == 0
    )
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    expected = loaded_cond.generate("0-3", psi=0.7, labels=2)
    np.testing.assert_array_equal(grid[16:, 16:], expected[3])

    assert (
        run(
            generate_cmd,
            [
                "--model",
                str(export_cond),
                "--seeds",
                "5,9",
                "--labels",
                "0,1",
                "--separate",
                "--out",
                "imgs",
            ],
        )
        == 0
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "imgs" / "seed0009.png")),
        loaded_cond.generate([9], labels=1)[0],
    )


def test_generate_interpolation_gif(export_uncond, tmp_path):
    out = tmp_path / "walk.gif"
    assert (
        run(
            generate_cmd,
            [
                "--model",
                str(export_uncond),
                "--seeds",
                "0-2",
                "--interpolate",
                "--frames",
                "2",
                "--out",
                str(out),
            ],
        )
        == 0
    )
    with Image.open(out) as gif:
        assert gif.n_frames == 6


def test_export_command_writes_and_verifies(export_uncond, tmp_path, capsys):
    out = tmp_path / "g.onnx"
    assert (
        run(export_cmd, ["--model", str(export_uncond), "--format", "onnx", "--out", str(out)]) == 0
    )
    assert out.is_file() and "matches PyTorch" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    from pipeline.cli import main

    assert (
        main(["generate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "g.png")]) == 2
    )
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err
    assert main(["register", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "generator.json" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [("3", [3]), ("cat, 2", ["cat", 2]), (None, None)])
def test_parse_labels(text, expected):
    assert generate_cmd.parse_labels(text) == expected
