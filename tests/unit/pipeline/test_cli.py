"""The ganforge CLI: every subcommand has --help; user mistakes are one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[3]


def test_top_level_help_lists_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0
    for name in ("prep", "train", "eval", "register", "generate", "serve", "run", "export"):
        assert name in out.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: ganforge " + command in capsys.readouterr().out


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_wrong_config_key_is_one_line(capsys, tmp_path):
    err = _one_line_error(
        capsys, ["train", "--set", "train.bacth=3", "--set", f"work_dir={tmp_path}"]
    )
    assert "train.bacth" in err and "valid keys" in err


def test_bad_value_is_one_line(capsys, tmp_path):
    err = _one_line_error(
        capsys, ["train", "--set", "train.mixed_precision=fp64", "--set", f"work_dir={tmp_path}"]
    )
    assert "train.mixed_precision" in err and "'bf16'" in err


def test_missing_data_path_is_one_line(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    err = _one_line_error(
        capsys, ["train", "--set", f"data.manifest={missing}", "--set", f"work_dir={tmp_path}"]
    )
    assert str(missing) in err and "ganforge prep" in err


def test_missing_prep_source_is_one_line(capsys, tmp_path):
    missing = tmp_path / "no-images"
    err = _one_line_error(
        capsys, ["prep", "--source", str(missing), "--out", str(tmp_path / "out")]
    )
    assert str(missing) in err


def test_prep_can_precompute_eval_reference(capsys, tmp_path):
    out = tmp_path / "digits16"
    assert (
        main(
            [
                "prep",
                "--source",
                "digits",
                "--out",
                str(out),
                "--resolution",
                "16",
                "--workers",
                "1",
                "--no-progress",
                "--eval-reference",
                "coverage",
            ]
        )
        == 0
    )
    assert "cached reference statistics" in capsys.readouterr().out
    assert any(
        (out / "eval-cache").iterdir()
    )  # classifier + features, keyed by the manifest sha256


def test_prep_eval_reference_without_inception_weights_fails_before_work(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    err = _one_line_error(
        capsys,
        [
            "prep",
            "--source",
            "digits",
            "--out",
            str(tmp_path / "d"),
            "--resolution",
            "16",
            "--workers",
            "1",
            "--no-progress",
            "--eval-reference",
            "fid",
        ],
    )
    assert "weights-inception-2015-12-05-6726825d.pth" in err
