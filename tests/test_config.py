"""The one run config: presets, YAML sections, dotted flags and aliases, errors naming the field."""

import argparse

import pytest

from tubelet.config import (PRESETS, SAFE_ON_RESUME, RunConfig, add_config_arguments, canonical, load_config,
                            preset, resolve_config, resolve_resume, save_config)
from tubelet.errors import ConfigError


def parser():
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    return p


def parse(argv):
    return resolve_config(parser().parse_args(argv))


def test_presets_follow_table7():
    assert parse(["--preset", "k400"]).optim.lr == 0.1 and parse(["--preset", "k400"]).optim.epochs == 30
    ek = parse(["--preset", "ek100"])
    assert (ek.optim.lr, ek.optim.epochs, ek.model.overrides["drop_path"], ek.label_smoothing, ek.mixup_alpha) \
        == (0.5, 50, 0.2, 0.2, 0.1)
    ss = parse(["--preset", "ssv2"])
    assert (ss.augment.randaugment_magnitude, ss.model.overrides["drop_path"], ss.label_smoothing,
            ss.mixup_alpha) == (20, 0.3, 0.3, 0.3)
    assert parse(["--preset", "mit"]).optim.lr == 0.25
    for name in ("k400", "k600", "mit", "ek100", "ssv2"):
        o = parse(["--preset", name]).optim
        assert (o.batch_size, o.momentum, o.warmup_epochs, o.grad_clip, o.optimizer) == (64, 0.9, 2.5, 1.0, "sgd")


def test_yaml_sections_override_the_preset_and_flags_override_yaml(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("preset: ssv2\noptim:\n  lr: 0.3\n  batch_size: 32\nmodel:\n  drop_path: 0.1\n")
    cfg = parse(["--config", str(f), "--batch-size", "8", "--model.num-kv-heads", "2", "--ema", "none"])
    assert cfg.preset == "ssv2" and cfg.optim.epochs == 35  # from the preset
    assert cfg.optim.lr == 0.3 and cfg.model.overrides["drop_path"] == 0.1  # from the file
    assert cfg.optim.batch_size == 8 and cfg.model.overrides["num_kv_heads"] == 2  # from the flags
    assert cfg.optim.ema is None


def test_flat_yaml_of_older_runs_still_reads(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text("model: vivit_micro\nmodel_args: {hidden_size: 32}\nnum_frames: null\nlr: 0.01\n"
                 "eval_views: 2\nout: runs/x\n")
    cfg = load_config(f)
    assert cfg.model.name == "vivit_micro" and cfg.model.overrides == {"hidden_size": 32}
    assert cfg.optim.lr == 0.01 and cfg.clip.views == 2 and cfg.runtime.out == "runs/x"


def test_every_field_is_a_dotted_flag_and_the_old_flags_are_aliases():
    cfg = parse(["--model.drop-path", "0.2", "--clip.stride", "1", "--optim.lr", "0.5", "--data.missing", "skip",
                 "--runtime.seed", "3", "--augment.preset", "none", "--model.image-size", "160x288"])
    assert cfg.model.overrides["drop_path"] == 0.2 and cfg.clip.stride == 1 and cfg.optim.lr == 0.5
    assert cfg.data.missing == "skip" and cfg.runtime.seed == 3 and cfg.augment.preset == "none"
    assert cfg.model.overrides["image_size"] == (160, 288)
    old = parse(["--lr", "0.5", "--epochs", "3", "--batch-size", "8", "--data", "d", "--frame-stride", "1",
                 "--num-frames", "16", "--model-args", '{"dropout": 0.1}'])
    assert (old.optim.lr, old.optim.epochs, old.optim.batch_size, old.data.path, old.clip.stride) == \
        (0.5, 3, 8, "d", 1)
    assert old.model.overrides == {"num_frames": 16, "dropout": 0.1}


def test_every_flag_has_help_text():
    for action in parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 10, action.option_strings


def test_unknown_keys_name_the_closest_field(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown field 'optim.lrr'; did you mean 'optim.lr'"):
        parse(["--config", str(f)])
    with pytest.raises(ConfigError, match="did you mean 'model.drop_path'"):
        canonical("model.droppath")
    with pytest.raises(ConfigError, match="num_head"):
        parse(["--model-args", '{"num_head": 4}'])


def test_bad_values_are_config_errors_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match="optim.optimizer='adam'"):
        parse(["--optimizer", "adam"])
    with pytest.raises(ConfigError, match=r"optim.lr=-1.0 must be greater than 0"):
        parse(["--lr", "-1"])
    with pytest.raises(ConfigError, match="num_frames=0 must be at least 1"):
        parse(["--num-frames", "0"])
    with pytest.raises(ConfigError, match="data.val_split"):
        parse(["--val-split", "1.5"])
    with pytest.raises(SystemExit):
        parse(["--batch-size", "many"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        parse(["--config", str(bad)])
    with pytest.raises(ConfigError, match="does not exist"):
        parse(["--config", str(tmp_path / "missing.yaml")])


def test_the_augmentation_presets_regularisers_are_used():
    """`--augment ssv2` brings its mixup and label smoothing unless they are set."""
    cfg = parse(["--preset", "k400", "--augment", "ssv2"])
    assert cfg.mixup_alpha == 0.3 and cfg.label_smoothing == 0.3
    assert parse(["--preset", "k400", "--augment", "ssv2", "--mixup-alpha", "0"]).mixup_alpha == 0.0
    assert parse(["--augment", "ssv2"]).label_smoothing == 0.1  # the default preset sets its own


def test_default_preset_is_the_builtin_dataset_run():
    cfg = parse([])
    assert cfg.preset == "default" and cfg.data.path is None and cfg.model.name == PRESETS["default"]["model.name"]
    assert isinstance(cfg, RunConfig)


def test_round_trip_through_yaml(tmp_path):
    cfg = parse(["--preset", "ek100", "--model.image-size", "160x288", "--lr", "0.2"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_resume_keeps_the_recipe_and_allows_only_safe_changes(tmp_path):
    saved = parse(["--lr", "0.01", "--epochs", "3", "--out", str(tmp_path)])
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    same = resolve_resume(saved, p.parse_args(["--out", str(tmp_path), "--lr", "0.01", "--workers", "0"]))
    assert same.optim.lr == 0.01 and same.optim.epochs == 3 and same.data.workers == 0
    with pytest.raises(ConfigError, match=r"optim.lr was 0.01 .* cannot change to 0.1"):
        resolve_resume(saved, p.parse_args(["--lr", "0.1"]))
    with pytest.raises(ConfigError, match="preset"):
        resolve_resume(saved, p.parse_args(["--preset", "k400"]))
    with pytest.raises(ConfigError, match="model"):
        resolve_resume(saved, p.parse_args(["--model.drop-path", "0.3"]))
    assert "runtime.log_every" in SAFE_ON_RESUME and "optim.lr" not in SAFE_ON_RESUME


def test_help_shows_the_default_presets_values():
    """`tubelet train --help` shows what a run with no arguments uses, not the dataclass defaults."""
    from tubelet.cli import build_parser
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert f"(default: {PRESETS['default']['optim.lr']})" in text
    assert "--optim.lr LR, --lr LR" in text and "--model.drop-path PATH, --drop-path PATH" in text
    assert "(default: None)" not in text
    assert preset("default").optim.lr == PRESETS["default"]["optim.lr"]


def test_a_pretrained_caption_decoder_is_a_checked_choice():
    assert parse(["--task", "caption", "--model.decoder", "smollm2"]).model.decoder == "smollm2"
    with pytest.raises(ConfigError, match="choose one of own, smollm2"):
        parse(["--task", "caption", "--model.decoder", "gpt2"])
    with pytest.raises(ConfigError, match="add --task caption"):
        parse(["--model.decoder", "smollm2"])
