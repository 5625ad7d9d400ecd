"""`ganforge project | inpaint | upscale` through the real CLI entry point (in-process)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pipeline.cli import main as cli


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_project_inpaint_upscale_write_their_outputs(
    export_uncond, loaded_uncond, tmp_path, capsys
):
    target = loaded_uncond.generate([3])[0]
    img = _png(tmp_path / "x.png", target)
    fast = ["--steps", "5", "--model", str(export_uncond)]
    assert (
        cli(["project", "--image", img, "--out", str(tmp_path / "proj"), "--frames", "3", *fast])
        == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["distance"] == "pixel-multiscale" and report["space"] == "w"
    for name in ("target.png", "projected.png", "latent.safetensors", "progress.gif"):
        assert (tmp_path / "proj" / name).is_file()

    mask = np.zeros((16, 16), np.uint8)
    mask[4:10, 4:10] = 255
    m = _png(tmp_path / "m.png", mask)
    assert (
        cli(["inpaint", "--image", img, "--mask", m, "--out", str(tmp_path / "f.png"), *fast]) == 0
    )
    filled = np.asarray(Image.open(tmp_path / "f.png"))
    np.testing.assert_array_equal(filled[mask == 0], target[mask == 0])

    low = _png(tmp_path / "low.png", target[::4, ::4].copy())
    assert cli(["upscale", "--image", low, "--out", str(tmp_path / "hi.png"), *fast]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["factor"] == 4
    assert np.asarray(Image.open(tmp_path / "hi.png")).shape == (16, 16, 3)


def test_bad_inputs_are_one_line_errors(export_uncond, tmp_path, capsys):
    model = ["--model", str(export_uncond), "--steps", "2"]
    (tmp_path / "bad.png").write_bytes(b"nope")
    cases = [
        (
            ["project", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")],
            "no such image",
        ),
        (
            ["project", "--image", str(tmp_path / "bad.png"), "--out", str(tmp_path / "o")],
            "not a readable image",
        ),
        (
            [
                "upscale",
                "--image",
                _png(tmp_path / "odd.png", np.zeros((5, 5, 3), np.uint8)),
                "--out",
                str(tmp_path / "u.png"),
            ],
            "whole number",
        ),
        (
            [
                "inpaint",
                "--image",
                _png(tmp_path / "ok.png", np.zeros((16, 16, 3), np.uint8)),
                "--mask",
                str(tmp_path / "none.png"),
                "--out",
                str(tmp_path / "i.png"),
            ],
            "no such mask",
        ),
        (
            [
                "project",
                "--image",
                str(tmp_path / "ok.png"),
                "--out",
                str(tmp_path / "o"),
                "--lpips-weights",
                str(tmp_path / "v.pt"),
            ],
            "never downloaded",
        ),
    ]
    for argv, message in cases:
        assert cli(argv + model) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
