"""Presets, then a YAML file, then flags; bad values get errors naming the field."""

import argparse

import pytest

from tubelet.train.config import PRESETS, TrainConfig, add_config_arguments, resolve_config


def parse(argv):
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    return resolve_config(p.parse_args(argv))


def test_presets_follow_table7():
    assert parse(["--preset", "k400"]).lr == 0.1 and parse(["--preset", "k400"]).epochs == 30
    ek = parse(["--preset", "ek100"])
    assert (ek.lr, ek.epochs, ek.drop_path, ek.label_smoothing, ek.mixup_alpha) == (0.5, 50, 0.2, 0.2, 0.1)
    ss = parse(["--preset", "ssv2"])
    assert (ss.randaugment_magnitude, ss.drop_path, ss.label_smoothing, ss.mixup_alpha) == (20, 0.3, 0.3, 0.3)
    assert parse(["--preset", "mit"]).lr == 0.25
    for name in ("k400", "k600", "mit", "ek100", "ssv2"):
        cfg = parse(["--preset", name])
        assert (cfg.batch_size, cfg.momentum, cfg.warmup_epochs, cfg.grad_clip, cfg.optimizer) == (64, 0.9, 2.5, 1.0, "sgd")


def test_yaml_overrides_preset_and_flags_override_yaml(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("preset: ssv2\nlr: 0.3\nbatch_size: 32\nmodel_args: {drop_path: 0.1}\n")
    cfg = parse(["--config", str(f), "--batch-size", "8", "--num-kv-heads", "2", "--ema", "none"])
    assert cfg.preset == "ssv2" and cfg.epochs == 35  # from the preset
    assert cfg.lr == 0.3  # from the file
    assert cfg.batch_size == 8 and cfg.num_kv_heads == 2  # from the flags
    assert cfg.model_args == {"drop_path": 0.1} and cfg.ema is None


def test_unknown_yaml_field_is_named(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['learning_rate'\]"):
        parse(["--config", str(f)])


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="optimizer='adam'"):
        parse(["--optimizer", "adam"])
    with pytest.raises(SystemExit):
        parse(["--batch-size", "many"])


def test_default_preset_is_the_builtin_dataset_run():
    cfg = parse([])
    assert cfg.preset == "default" and cfg.data is None and cfg.model == PRESETS["default"]["model"]
    assert isinstance(cfg, TrainConfig)


def test_default_run_folder_is_the_next_free_one(tmp_path):
    from tubelet.train.loop import default_run_dir
    assert default_run_dir("k400", False, tmp_path) == tmp_path / "k400"
    (tmp_path / "k400" / "final").mkdir(parents=True)  # a finished run
    assert default_run_dir("k400", False, tmp_path) == tmp_path / "k400-2"
    ckpts = tmp_path / "k400-2" / "checkpoints" / "step-0000003"
    ckpts.mkdir(parents=True)
    (ckpts / "train_state.pt").write_bytes(b"")
    (ckpts.parent / "latest").write_text("step-0000003\n")
    assert default_run_dir("k400", False, tmp_path) == tmp_path / "k400-3"
    assert default_run_dir("k400", True, tmp_path) == tmp_path / "k400-2"  # --resume: the last run


def test_help_shows_the_default_presets_values():
    """`tubelet train --help` shows what a run with no arguments uses, not the dataclass defaults."""
    from tubelet.cli import build_parser
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert f"--lr LR default: {PRESETS['default']['lr']}" in text
    assert f"--epochs EPOCHS default: {PRESETS['default']['epochs']}" in text
    assert "(default: None)" not in text  # --device, --preset, --config
    assert parse([]).lr == PRESETS["default"]["lr"]
