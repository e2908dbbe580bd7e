"""Typed configs: presets load, overrides apply, bad values are refused with clear messages."""

import pytest

from unipose_ray.config import DistillConfig, TeacherConfig, load_config, preset_path
from unipose_ray.config_io import ConfigError, apply_overrides, build, load_yaml
from unipose_ray.data.sources import DataConfig, DatasetFiles


@pytest.mark.parametrize("preset", ["demo", "demo_self_trained", "demo_models", "paper"])
def test_presets_load(preset):
    config = load_config(preset)
    assert {t.name for t in config.teachers} == {"coco", "mpii"}
    assert config.student.dataset == "unified"


def test_overrides_reach_nested_fields_and_lists():
    config = load_config("demo", ["optim.epochs=2", "teachers.1.weight=0.3",
                                  "student.codec.input_size=[192, 256]", "run.name=x"])
    assert config.optim.epochs == 2 and config.run.name == "x"
    assert config.teachers[1].weight == 0.3 and config.teachers[0].weight == load_config("demo").teachers[0].weight
    assert config.student.codec.input_size == (192, 256)


def test_unknown_keys_are_named_with_the_valid_ones():
    values = load_yaml(preset_path("demo"))
    with pytest.raises(ConfigError, match=r"optim: unknown key\(s\) \['epoch'\]; valid keys"):
        build(DistillConfig, apply_overrides(values, ["optim.epoch=3"]))
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(values, ["teachers.5.weight=1"])
    with pytest.raises(ConfigError, match="expected int"):
        build(DistillConfig, apply_overrides(values, ["optim.epochs=three"]))


def test_all_zero_or_negative_weights_are_refused():
    with pytest.raises(ConfigError, match="all loss weights are zero"):
        load_config("demo", ["loss.w_gt=0", "teachers.0.weight=0", "teachers.1.weight=0"])
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        load_config("demo", ["teachers.0.weight=-0.1"])
    with pytest.raises(ConfigError, match="w_gt must be >= 0"):
        load_config("demo", ["loss.w_gt=-1"])


def test_teacher_keypoint_set_must_be_in_the_unified_skeleton():
    with pytest.raises(ConfigError, match="'crowdpose' is not covered by the unified skeleton"):
        TeacherConfig(name="cp", dataset="crowdpose")


def test_missing_data_paths_name_the_field(tmp_path):
    data = DataConfig(coco_val=DatasetFiles(str(tmp_path / "nope.json"), str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"data.coco_val.ann_file = .*nope.json does not exist"):
        data.check()


def test_teachers_trained_from_the_pretrained_backbone_must_share_its_size():
    assert load_config("demo_self_trained").pretrain is not None  # it pretrains its backbone
    with pytest.raises(ConfigError, match=r"start from the student's backbone \(RTMPose-t\), "
                                          r"but \{'mpii': 'm'\} ask for another size"):
        load_config("demo_self_trained", ["teachers.1.train_size=m"])
    # given teacher checkpoints are not trained here: any size is fine
    config = load_config("paper", ["student.backbone_checkpoint=cspnext-s.pth"])
    assert config.student.backbone_checkpoint == "cspnext-s.pth"


def test_pretrain_settings_are_checked():
    with pytest.raises(ConfigError, match="pretrain.dataset must be 'coco' or 'mpii'"):
        load_config("demo_self_trained", ["pretrain.dataset=unified"])
    with pytest.raises(ConfigError, match="pretrain.epochs must be >= 1"):
        load_config("demo_self_trained", ["pretrain.epochs=0"])
