"""Bad input gets a clear error before any computation."""

import pytest

import tubelet
from tubelet.models import ConfigError, ViViTConfig


def test_frames_not_divisible_by_the_tubelet():
    with pytest.raises(ConfigError, match=r"num_frames=31 is not divisible by tubelet_size=2.*e\.g\. 32"):
        tubelet.create_model("vivit_b16x2", num_frames=31)


def test_size_not_divisible_by_the_patch():
    with pytest.raises(ConfigError, match=r"image size 200x224 is not divisible by patch_size=16"):
        tubelet.get_config("vivit_b16x2", image_size=(200, 224))


@pytest.mark.parametrize("name", ["vivit_b16x2_fsa", "vivit_b16x2_fdp"])
def test_cls_token_refused_on_models_3_and_4(name):
    with pytest.raises(ConfigError, match="has no CLS token.*classifier='gap'"):
        tubelet.get_config(name, classifier="token")


def test_heads_not_divisible_by_kv_heads():
    with pytest.raises(ConfigError, match="num_heads=12 is not divisible by num_kv_heads=5"):
        tubelet.get_config("vivit_b16x2", num_kv_heads=5)


def test_model4_kv_groups_must_not_span_time_and_space_heads():
    with pytest.raises(ConfigError, match="even num_kv_heads"):
        tubelet.get_config("vivit_b16x2_fdp", num_kv_heads=3)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown model name 'vivit_b16x2_f'.*did you mean.*vivit_b16x2_fe"):
        tubelet.create_model("vivit_b16x2_f")


def test_unknown_override_field():
    with pytest.raises(ConfigError, match="num_layer"):
        tubelet.get_config("vivit_b16x2", num_layer=3)


def test_config_round_trips_through_json():
    cfg = tubelet.get_config("vivit_l16x2_fe", num_classes=(97, 300), image_size=(160, 288))
    again = ViViTConfig.from_dict(__import__("json").loads(cfg.to_json()))
    assert again == cfg and again.image_size == (160, 288) and again.num_classes == (97, 300)


def test_registry_has_the_required_names():
    names = set(tubelet.list_models())
    for backbone in ("b", "l", "h"):
        for suffix in ("", "_fe", "_fsa", "_fdp", "_fe_avgpool"):
            assert f"vivit_{backbone}16x2{suffix}" in names
    assert "vivit_b14x2" in names and "vivit_ti16x2_fe" in names
