"""Typed config: every preset loads, overrides apply, mistakes give errors naming the key."""

from __future__ import annotations

import pytest
import yaml

from pipeline.config import RunConfig, config_from_yaml_file, list_presets, load_config, save_config
from pipeline.configtools import ConfigError


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_loads(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, RunConfig)
    assert cfg.train.batch > 0


def test_only_the_digits_preset_takes_its_schedule_tricks():
    """Presets built on ``digits`` keep their papers' recipes: no learning-rate ramp-down (the
    original StyleGAN2/ProGAN/DCGAN/WGAN schedules are constant), fresh fakes for D, no
    mode-seeking term, no InfoGAN code and the final G as the result."""
    digits = load_config("digits")
    assert digits.loss.reuse_fakes and digits.train.lr_rampdown_kimg == 16
    assert (digits.loss.ms_weight, digits.loss.ms_decay_kimg) == (1.0, 40)
    assert digits.model.latent_classes == 20
    assert (digits.loss.info_weight, digits.loss.info_decay_kimg) == (1.0, 40)
    assert digits.eval.use_best and digits.eval.keep_best == "confident_balanced"
    for preset in sorted(set(list_presets()) - {"digits"}):
        cfg = load_config(preset)
        assert not cfg.loss.reuse_fakes, preset
        assert cfg.loss.ms_weight == 0, preset
        assert cfg.train.lr_rampdown_kimg == 0, preset
        assert cfg.model.latent_classes == 0, preset
        assert not cfg.eval.use_best, preset


def test_there_are_presets_for_the_stylegan2_ada_configs():
    assert {"digits", "cifar", "paper256", "paper512", "paper1024", "stylegan2", "auto256"} <= set(
        list_presets()
    )


def test_default_preset_is_digits_on_stylegan2():
    cfg = load_config()
    assert cfg.prep.source == "digits" and cfg.model.family == "stylegan2"


def test_overrides_apply_with_types():
    cfg = load_config(
        "digits",
        [
            "train.batch=64",
            "train.mixed_precision=bf16",
            "model.conditional=true",
            "model.latent_classes=0",  # the preset's InfoGAN code is for unconditional models
            "train.betas=[0.0, 0.9]",
            "train.resume=null",
        ],
    )
    assert cfg.train.batch == 64
    assert cfg.train.mixed_precision == "bf16"
    assert cfg.model.conditional is True
    assert cfg.train.betas == (0.0, 0.9)
    assert cfg.train.resume is None


def test_unknown_key_in_override_names_path_and_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config("digits", ["train.batchsize=3"])
    msg = str(err.value)
    assert "train.batchsize" in msg and "batch" in msg and "total_kimg" in msg


def test_unknown_section_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: digits\ntrian:\n  batch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "trian" in str(err.value) and "train" in str(err.value)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.batch=-3", "train.batch"),
        ("train.batch=abc", "train.batch"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("prep.resolution=30", "prep.resolution"),
        ("augment.policy=color,zoom", "augment.policy"),
        ("loss.r1_interval=0", "loss.r1_interval"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("digits", [override])
    assert needle in str(err.value)


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config("digits", ["train.batch"])


def test_unknown_preset_lists_builtins():
    with pytest.raises(ConfigError) as err:
        load_config("nope")
    assert "digits" in str(err.value)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("digits", ["train.batch=16"])
    path = save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["train"]["batch"] == 16
    assert config_from_yaml_file(path) == cfg


def test_preset_inheritance(tmp_path):
    path = tmp_path / "child.yaml"
    path.write_text("base: digits\ntrain:\n  batch: 8\n")
    cfg = load_config(str(path))
    assert cfg.train.batch == 8 and cfg.prep.source == "digits"


def test_yaml_boolean_words_for_string_choices():
    # YAML 1.1 parses `no` as false; mixed_precision's choice "no" must still work
    assert load_config("digits", ["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert (
        load_config("digits", ["train.lr_g=1e-3"]).train.lr_g == 0.001
    )  # "1e-3" is a string in YAML 1.1
