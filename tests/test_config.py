"""Typed configs: presets load, overrides apply, bad values are refused with clear messages."""

import pytest

from unipose_ray.cli import InputError
from unipose_ray.config import DistillConfig, TeacherConfig, load_config, preset_path
from unipose_ray.config.loading import ConfigError, apply_overrides, build, load_yaml
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
    with pytest.raises(ConfigError, match=r"optim: unknown key\(s\) \['epoch'\] \(epoch -> "
                                          r"epochs\?\); valid keys"):
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
    with pytest.raises(ConfigError, match="'lsp' is not covered by the unified skeleton"):
        TeacherConfig(name="lsp", dataset="lsp")
    assert TeacherConfig(name="cp", dataset="crowdpose").dataset == "crowdpose"


def test_missing_data_paths_are_named_all_at_once(tmp_path):
    data = DataConfig(coco_val=DatasetFiles(str(tmp_path / "nope.json"), str(tmp_path)),
                      mpii_val=DatasetFiles(str(tmp_path / "mpii.json"), str(tmp_path / "img")))
    with pytest.raises(InputError) as error:
        data.check()
    assert isinstance(error.value, FileNotFoundError)
    assert [line.strip() for line in str(error.value).splitlines()[1:4]] == [
        f"data.coco_val.ann_file = {tmp_path / 'nope.json'}",
        f"data.mpii_val.ann_file = {tmp_path / 'mpii.json'}",
        f"data.mpii_val.img_dir = {tmp_path / 'img'}"]


def test_a_typo_in_a_preset_name_lists_the_presets():
    with pytest.raises(ConfigError, match=r"--config demoo: neither a preset \(demo, "
                                          r"demo_self_trained, .*paper_body\) nor a YAML file; did "
                                          r"you mean demo\?"):
        load_config("demoo")


@pytest.mark.parametrize("source", ["override", "file"])
def test_words_yaml_1_1_reads_as_booleans_stay_words(source, tmp_path):
    """README: ``optim.amp: bf16 | fp16 | off``; YAML 1.1 reads ``off`` as False."""
    if source == "override":
        config = load_config("demo", ["optim.amp=off", "run.use_gpu=yes", "run.name=no"])
    else:
        text = preset_path("demo").read_text() + "\n".join(
            ["", "optim: {amp: off, epochs: 6, batch_size: 16, lr: 0.002, warmup_steps: 50, "
             "ema: false}", "tracking: {experiment: on}"])
        (tmp_path / "c.yaml").write_text(text.replace("run:\n  name: demo", "run:\n  name: n\n"
                                                     "  use_gpu: yes"))
        config = load_config(str(tmp_path / "c.yaml"), ["run.name=no"])
        assert config.tracking.experiment == "on"
    assert config.optim.amp == "off" and config.run.use_gpu is True and config.run.name == "no"
    assert load_config("demo", ["run.use_gpu=Off"]).run.use_gpu is False


def test_null_and_booleans_where_a_word_or_number_belongs_are_refused_with_the_way_out():
    with pytest.raises(ConfigError, match=r"optim.amp: expected str, got null \(write the "
                                          r"word in quotes: 'null'\)"):
        load_config("demo", ["optim.amp=null"])
    with pytest.raises(ConfigError, match="optim.epochs: expected int, got True"):
        load_config("demo", ["optim.epochs=true"])
    with pytest.raises(ConfigError, match="override 'optim.amp=\\[bf16': the value is not "
                                          "valid YAML"):
        load_config("demo", ["optim.amp=[bf16"])


def test_teachers_trained_from_the_pretrained_backbone_must_share_its_size():
    assert load_config("demo_self_trained").pretrain is not None  # it pretrains its backbone
    with pytest.raises(ConfigError, match=r"start from the student's backbone \(RTMPose-t\), "
                                          r"but \{'mpii': 'm'\} ask for another size"):
        load_config("demo_self_trained", ["teachers.1.train_size=m"])
    # given teacher checkpoints are not trained here: any size is fine
    config = load_config("paper", ["student.backbone_checkpoint=cspnext-s.pth"])
    assert config.student.backbone_checkpoint == "cspnext-s.pth"


def test_pretrain_settings_are_checked():
    with pytest.raises(ConfigError, match="pretrain.dataset must be one of"):
        load_config("demo_self_trained", ["pretrain.dataset=unified"])
    with pytest.raises(ConfigError, match="pretrain.epochs must be >= 1"):
        load_config("demo_self_trained", ["pretrain.epochs=0"])


def test_a_file_with_a_base_merges_mappings_and_replaces_lists_and_values(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "base: demo\n"
        "optim: {epochs: 2}\n"  # one key of a mapping: the rest stay the base's
        # a list: replaced whole
        "teachers:\n  - {name: coco, dataset: coco, weight: 0.5, train_size: t}\n"
        "baseline: false\n")
    (tmp_path / "nested.yaml").write_text("base: mine.yaml\nrun: {name: nested}\n")  # relative
    demo, mine = load_config("demo"), load_config(str(tmp_path / "nested.yaml"))
    assert mine.optim.epochs == 2 and mine.optim.lr == demo.optim.lr
    assert mine.optim.batch_size == demo.optim.batch_size
    assert [(t.name, t.weight, t.checkpoint) for t in mine.teachers] == [("coco", 0.5, None)]
    assert mine.baseline is False and mine.run.name == "nested"
    assert mine.run.data_actors == demo.run.data_actors and mine.generate == demo.generate


def test_the_demo_presets_build_on_the_demo(tmp_path):
    demo = load_config("demo")
    sweep = load_config("demo_sweep")
    assert sweep.student == demo.student and sweep.teachers == demo.teachers
    assert sweep.augment == demo.augment and sweep.loss == demo.loss
    assert "base: demo" in preset_path("demo_sweep").read_text()


def test_a_bad_base_is_named_with_its_file(tmp_path):
    loop_a, loop_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    loop_a.write_text("base: b.yaml\n")
    loop_b.write_text("base: a.yaml\n")
    loop = r"b.yaml: base: a.yaml makes a loop \(\S*a.yaml -> \S*b.yaml -> \S*a.yaml\)"
    with pytest.raises(ConfigError, match=loop):
        load_config(str(loop_a))
    typo = tmp_path / "typo.yaml"
    typo.write_text("base: dmeo\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: base: dmeo: neither a preset .*; "
                                          r"did you mean demo\?"):
        load_config(str(typo))
    number = tmp_path / "number.yaml"
    number.write_text("base: 3\n")
    with pytest.raises(ConfigError, match="base must be a preset name or a YAML file, got 3"):
        load_config(str(number))


def test_rtmposes_recipe_follows_the_student_size_and_the_demo_keeps_its_settings():
    paper = load_config("paper")  # RTMPose-s: no weight decay, stage 2 for the last 30 epochs
    assert (paper.optim.weight_decay, paper.optim.flat_decay) == (0.0, True)
    assert paper.augment.stage2_start(paper.optim.epochs) == 390
    assert load_config("paper", ["student.size=m"]).optim.weight_decay == 0.05
    assert load_config("paper", ["optim.weight_decay=0.01"]).optim.weight_decay == 0.01
    for preset in ("demo", "demo_self_trained", "demo_models", "demo_sweep"):
        config = load_config(preset)  # its numbers from before the recipe, stated
        assert (config.optim.weight_decay, config.optim.flat_decay) == (0.05, False)
        assert config.augment.stage2_epochs == 0 and config.augment.median_blur_prob == 0


def test_recipe_settings_are_checked():
    with pytest.raises(ConfigError, match=r"augment.stage2_epochs must be >= 0"):
        load_config("paper", ["augment.stage2_epochs=-1"])
    with pytest.raises(ConfigError, match=r"augment.median_blur_prob must be a probability"):
        load_config("paper", ["augment.median_blur_prob=1.5"])
    with pytest.raises(ConfigError, match=r"optim.weight_decay must be >= 0"):
        load_config("paper", ["optim.weight_decay=-0.1"])
    with pytest.raises(ConfigError, match=r"teacher_cache.uri with augment.stage2_epochs=30"):
        load_config("paper", ["teacher_cache.uri=/tmp/cache"])
    assert load_config("paper", ["teacher_cache.uri=/tmp/cache", "augment.stage2_epochs=0"])
