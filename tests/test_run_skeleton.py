"""A run's unified skeleton: the ordered union of the datasets its config names."""

from dataclasses import fields

import pytest

from unipose_ray.config import DataConfig, DatasetFiles, load_config
from unipose_ray.config.files import split_dataset
from unipose_ray.config.schema import GENERATED_BY_DEFAULT, generated_datasets
from unipose_ray.skeleton import DATASET_SETS, UNIFIED, unified_skeleton


def test_data_config_has_a_train_and_a_val_split_for_every_dataset():
    splits = [f.name for f in fields(DataConfig) if f.type.startswith("DatasetFiles")]
    assert {split_dataset(s) for s in splits} == set(DATASET_SETS)
    assert len(splits) == 2 * len(DATASET_SETS)


def test_the_papers_presets_keep_the_21_joints():
    for preset in ("demo", "paper"):
        config = load_config(preset, [])
        assert config.datasets == ("coco", "mpii")
        assert config.skeleton is UNIFIED
        assert config.student_keypoints is UNIFIED


def test_datasets_come_from_data_generate_and_teachers(tmp_path):
    files = DatasetFiles(str(tmp_path / "a.json"), str(tmp_path))
    config = load_config("paper", [f"data.halpe26_train={{ann_file: {files.ann_file}, "
                                   f"img_dir: {files.img_dir}}}"])
    assert config.datasets == ("coco", "mpii", "halpe26")
    assert config.skeleton.num_keypoints == 27
    assert config.skeleton == unified_skeleton(["halpe26", "coco", "mpii"])
    demo = load_config("demo", ["generate.halpe26_train=4"])
    assert demo.datasets == ("coco", "mpii", "halpe26")
    teacher = load_config("demo", ["teachers.1.dataset=crowdpose"])
    assert teacher.datasets == ("coco", "mpii", "crowdpose")  # generated MPII stays
    assert teacher.skeleton == UNIFIED  # CrowdPose adds no joint to COCO + MPII


@pytest.mark.parametrize("generate", [{}, {"coco_train": 0, "coco_val": 0},
                                      {"halpe26_val": 2}, {"aic_train": 3, "crowdpose_val": 1}])
def test_generated_datasets_are_the_generators(generate):
    from unipose_ray.data.synthetic import SyntheticConfig

    synthetic = SyntheticConfig(**generate)
    assert generated_datasets(generate) == synthetic.datasets
    assert unified_skeleton(generated_datasets(generate)) == synthetic.skeleton
    assert set(GENERATED_BY_DEFAULT) <= set(synthetic.datasets)
    assert generated_datasets(None) == ()


def test_a_config_naming_no_dataset_has_the_papers_skeleton():
    config = load_config("paper", ["data={}", "teachers=[]"])
    assert config.datasets == ("coco", "mpii") and config.skeleton is UNIFIED


def test_a_model_is_evaluated_in_the_slots_of_generated_files():
    """The union of the model's datasets and the evaluated ones, in the order runs and the
    generator use: a Halpe-26 model on COCO + MPII + Halpe files fills the 27 slots in
    the files' order, not its own."""
    from unipose_ray.skeleton import COCO, HALPE26, covering_skeleton

    body = unified_skeleton(["coco", "mpii", "halpe26"])
    assert covering_skeleton(HALPE26, ["coco", "mpii", "halpe26"]) is body
    assert covering_skeleton(COCO, ["coco", "mpii"]) is UNIFIED
    assert covering_skeleton(body, ["coco"]) is body
    assert covering_skeleton(UNIFIED, ["halpe26"]) is body


def test_a_whole_skeleton_file_of_other_joints_is_refused(tmp_path):
    import json

    from unipose_ray.evaluation.cross_dataset import check_unified_joints

    path = tmp_path / "unified27_val.json"
    body = unified_skeleton(["coco", "mpii", "halpe26"])
    path.write_text(json.dumps({"categories": [{"keypoints": list(body.names)}]}))
    check_unified_joints(str(path), body)
    shuffled = unified_skeleton(["halpe26"])  # Halpe's own order: head before pelvis
    with pytest.raises(ValueError, match="unified27_val.json annotates the joints"):
        check_unified_joints(str(path), shuffled)
