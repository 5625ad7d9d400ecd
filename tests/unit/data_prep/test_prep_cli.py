"""`ganforge prep`: flags map onto PrepConfig, errors name the field, verify/merge actions."""

from __future__ import annotations

import argparse

import pytest

from data_prep import load_manifest
from pipeline.commands import prep as prep_command
from pipeline.configtools import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ganforge prep", description=prep_command.__doc__)
    prep_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def run(*argv: str) -> int:
    return prep_command.main(parse(*argv))


def test_help_mentions_box_for_fid():
    parser = argparse.ArgumentParser()
    prep_command.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "box reproduces published FID setups" in text and "{shard,verify,merge}" in text


def test_default_digits_run_then_verify_and_merge(tmp_path, capsys):
    out = str(tmp_path / "digits")
    assert (
        run("--source", "digits", "--out", out, "--no-progress") == 0
    )  # default options, all cores
    manifest = load_manifest(out)
    assert manifest.num_samples == 1797 and manifest.resolution == 32 and len(manifest.shards) >= 16
    assert "1797 samples in 16 shards" in capsys.readouterr().out
    assert run("verify", out, "--no-progress") == 0
    assert run("merge", out) == 0
    tar = tmp_path / "digits" / manifest.shards[3].name
    data = bytearray(tar.read_bytes())
    data[len(data) // 3] ^= 0x01
    tar.write_bytes(bytes(data))
    assert run("verify", out, "--no-progress", "--no-decode") == 1
    assert f"{manifest.shards[3].name}: sha256 mismatch" in capsys.readouterr().out


def test_flags_map_onto_config():
    args = parse(
        "--source",
        "x.zip",
        "--out",
        "o",
        "--resolution",
        "64",
        "--channels",
        "1",
        "--transform",
        "center-crop-wide",
        "--resize-filter",
        "box",
        "--format",
        "jpeg",
        "--jpeg-quality",
        "90",
        "--labels",
        "none",
        "--shard-samples",
        "10",
        "--shard-bytes",
        "0",
        "--val-fraction",
        "0.1",
        "--seed",
        "3",
        "--workers",
        "2",
        "--num-partitions",
        "4",
        "--partition",
        "3",
        "--min-size",
        "0",
    )
    cfg, out = prep_command.build_config(args)
    assert out == "o" and cfg.resolution == 64 and cfg.channels == 1 and cfg.image_format == "jpeg"
    assert (cfg.transform, cfg.resize_filter, cfg.labels) == ("center-crop-wide", "box", "none")
    assert (cfg.shard_samples, cfg.shard_bytes, cfg.val_fraction, cfg.seed) == (10, 0, 0.1, 3)
    assert (cfg.workers, cfg.num_partitions, cfg.partition, cfg.min_size) == (2, 4, 3, 0)
    assert (cfg.png_compress_level, cfg.fast) == (1, False)  # defaults: exact pixels, level 1
    cfg, _ = prep_command.build_config(parse("--out", "o", "--png-level", "0", "--fast"))
    assert (cfg.png_compress_level, cfg.fast) == (0, True)


@pytest.mark.parametrize(
    "argv,field",
    [
        (("--resolution", "33"), "resolution"),
        (("--jpeg-quality", "0"), "jpeg_quality"),
        (("--num-partitions", "2", "--partition", "2"), "partition"),
        (("--val-fraction", "1.5"), "val_fraction"),
        (("--png-level", "10"), "png_compress_level"),
    ],
)
def test_bad_values_name_the_field(argv, field):
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        prep_command.build_config(parse("--out", "o", *argv))


def test_user_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="give the prep output folder"):
        run("verify")
    with pytest.raises(ValueError, match="out: give the output folder"):
        run("--source", "digits")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run("--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--workers", "1")
    with pytest.raises(ValueError, match="not a ganforge manifest|no dataset manifest"):
        run("verify", str(tmp_path))


def test_through_the_ganforge_cli(tmp_path, capsys):
    from pipeline.cli import main as ganforge

    assert (
        ganforge(["prep", "--source", "digits", "--resolution", "33", "--out", str(tmp_path)]) == 2
    )
    assert capsys.readouterr().err.strip() == (
        "ganforge prep: error: resolution: must be a power of two in 4..2048, got 33"
    )
    with pytest.raises(SystemExit) as exc:
        ganforge(["prep", "--help"])
    assert exc.value.code == 0 and "ganforge prep verify DIR_OR_URL" in capsys.readouterr().out
