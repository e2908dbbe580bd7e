"""RTMPose's training recipe, piece by piece against MMPose's own configs and classes.

MMPose's ``rtmpose-{t,s,m}_8xb256-420e_coco-256x192.py`` (installed with mmpose): the
stage-1 and stage-2 augmentation and mmdet's ``PipelineSwitchHook``, the per-size AdamW
weight decay with its ``paramwise_cfg`` (mmengine's ``build_optim_wrapper``), and the
``EMAHook(ExpMomentumEMA, update_buffers=True)`` weight and BatchNorm averaging.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from unipose_ray.config import (
    AugmentConfig,
    CodecConfig,
    DistillConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
)
from unipose_ray.config.loading import ConfigError
from unipose_ray.config.schema import TeacherCacheConfig
from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset
from unipose_ray.data.readers import read_coco
from unipose_ray.data.transforms import crop_image, sample_params, sample_seed
from unipose_ray.models.compat import import_mmpose
from unipose_ray.models.rtmpose import build_rtmpose
from unipose_ray.train.optim import EMA, build_optimizer

SIZES = ("t", "s", "m")


def mmpose_config(size: str):
    """MMPose's RTMPose-``size`` COCO config, parsed by mmengine."""
    import mmpose  # noqa: PLC0415
    from mmengine.config import Config  # noqa: PLC0415

    return Config.fromfile(str(Path(mmpose.__file__).parent / ".mim/configs/body_2d_keypoint"
                               / f"rtmpose/coco/rtmpose-{size}_8xb256-420e_coco-256x192.py"))


def _step(pipeline: list[dict], name: str) -> dict:
    return next(t for t in pipeline if t["type"] == name)


def _albumentation(pipeline: list[dict], name: str) -> dict:
    return next(t for t in _step(pipeline, "Albumentation")["transforms"] if t["type"] == name)


# -- augmentation: MedianBlur and the stage-2 pipeline ------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_augment_defaults_are_rtmposes_stage_1_and_stage_2(size):
    config = mmpose_config(size)
    for pipeline, ours in ((config.train_pipeline, AugmentConfig()),
                           (config.train_pipeline_stage2, AugmentConfig.stage2())):
        box = _step(pipeline, "RandomBBoxTransform")
        assert tuple(box["scale_factor"]) == ours.scale_range
        assert box["rotate_factor"] == ours.rotate_factor
        assert box.get("shift_factor", 0.16) == ours.shift_factor  # MMPose's default 0.16
        assert _albumentation(pipeline, "Blur")["p"] == ours.blur_prob
        median = _albumentation(pipeline, "MedianBlur")
        assert median["p"] == ours.median_blur_prob
        assert "blur_limit" not in median  # albumentations' default 7: apertures 3, 5, 7
        assert _albumentation(pipeline, "CoarseDropout")["p"] == ours.dropout_prob
    hook = _step(config.custom_hooks, "mmdet.PipelineSwitchHook")
    assert AugmentConfig().stage2_epochs == config.stage2_num_epochs
    assert AugmentConfig().stage2_start(config.max_epochs) == hook["switch_epoch"]


@pytest.fixture(scope="module")
def records(real_samples):
    return read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")


def test_median_blur_is_cv2s_median_filter_after_the_box_blur(records):
    """albumentations' ``MedianBlur.apply`` is ``cv2.medianBlur(img, ksize)``, run after
    ``Blur`` (``cv2.blur``) in RTMPose's ``Albumentation`` list."""
    record = records[0]
    image = cv2.imread(record.image_path)
    params = sample_params(record, 1, CodecConfig(), AugmentConfig.none())
    for blur, median in ((0, 3), (5, 5), (3, 7)):
        plain = cv2.cvtColor(crop_image(image, replace(params, blur=blur)), cv2.COLOR_RGB2BGR)
        blurred = crop_image(image, replace(params, blur=blur, median_blur=median))
        expected = cv2.cvtColor(cv2.medianBlur(plain, median), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(blurred, expected)
        assert not np.array_equal(blurred, cv2.cvtColor(plain, cv2.COLOR_BGR2RGB))


def test_median_blur_draws_apertures_3_5_7_at_its_probability_and_moves_no_other_draw(records):
    codec, with_median = CodecConfig(), AugmentConfig()
    without = replace(with_median, median_blur_prob=0.0)
    drawn = []
    for seed in range(2000):
        params = sample_params(records[seed % len(records)], seed, codec, with_median)
        drawn.append(params.median_blur)
        # adding MedianBlur left every earlier draw (and so every earlier crop) as it was
        assert replace(params, median_blur=0) == sample_params(
            records[seed % len(records)], seed, codec, without)
    drawn = np.array(drawn)
    assert set(drawn[drawn > 0]) == {3, 5, 7}
    assert abs((drawn > 0).mean() - with_median.median_blur_prob) < 0.02


@functools.cache
def _load_switch_hook():
    """mmdet's ``PipelineSwitchHook`` (its module, once: it registers the class;
    ``mmdet.engine.hooks`` itself needs mmcv's compiled ops, which mmcv-lite lacks)."""
    import mmdet  # noqa: PLC0415

    path = Path(mmdet.__file__).parent / "engine" / "hooks" / "pipeline_switch_hook.py"
    spec = importlib.util.spec_from_file_location("mmdet_pipeline_switch_hook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PipelineSwitchHook


def _mmdet_stages(epochs: int, stage2_epochs: int) -> list[int]:
    """Which pipeline (1 or 2) mmdet's hook leaves in place for each epoch of a run."""
    hook = _load_switch_hook()(switch_epoch=epochs - stage2_epochs, switch_pipeline=[])
    stage1 = object()
    loader = SimpleNamespace(dataset=SimpleNamespace(pipeline=stage1), persistent_workers=False)
    runner = SimpleNamespace(train_dataloader=loader, logger=SimpleNamespace(info=print))
    stages = []
    for epoch in range(epochs):
        runner.epoch = epoch  # mmengine's EpochBasedTrainLoop: 0-based in before_train_epoch
        hook.before_train_epoch(runner)
        stages.append(1 if loader.dataset.pipeline is stage1 else 2)
    return stages


@pytest.mark.parametrize(("epochs", "stage2_epochs"), [(420, 30), (12, 3), (5, 1), (4, 6)])
def test_stage_2_starts_at_the_epoch_mmdets_pipeline_switch_hook_switches(
        records, epochs, stage2_epochs):
    pipeline = PipelineConfig(augment=AugmentConfig(stage2_epochs=stage2_epochs),
                              seed=5, epochs=epochs)
    ours = [2 if pipeline.augment_at(e) == AugmentConfig.stage2() else 1 for e in range(epochs)]
    assert ours == _mmdet_stages(epochs, stage2_epochs)
    # and the crops are drawn with it: TopdownDataset.params of a stage-2 epoch
    dataset = TopdownDataset(records, pipeline)
    for epoch in (0, epochs - 1):
        seed = sample_seed(pipeline.seed, epoch, records[0])
        augment = AugmentConfig.stage2() if ours[epoch] == 2 else pipeline.augment
        assert dataset.params(0, epoch) == sample_params(records[0], seed, pipeline.codec,
                                                         augment)


def test_no_switch_without_stage_2_or_a_run_length():
    assert PipelineConfig(augment=AugmentConfig(stage2_epochs=0), epochs=10).augment_at(9) \
        == AugmentConfig(stage2_epochs=0)
    assert PipelineConfig(epochs=0).augment_at(500) == AugmentConfig()  # validation, tools


def test_a_teacher_cache_with_a_stage_2_switch_is_refused_naming_the_fields():
    teacher = TeacherConfig("coco", "coco", weight=0.5)
    cached = TeacherCacheConfig(uri="/tmp/cache")
    with pytest.raises(ConfigError, match=r"teacher_cache.uri with augment.stage2_epochs=30.*"
                                          r"augment.stage2_epochs=0"):
        DistillConfig(teachers=(teacher,), teacher_cache=cached)
    DistillConfig(teachers=(teacher,), teacher_cache=cached,
                  augment=AugmentConfig(stage2_epochs=0))
    DistillConfig(teachers=(teacher,))  # online teachers: the switch is fine


# -- per-size weight decay: mmengine's build_optim_wrapper --------------------------------

def _decay_by_parameter(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    default = optimizer.defaults["weight_decay"]
    return {id(p): group.get("weight_decay", default)
            for group in optimizer.param_groups for p in group["params"]}


def _mmengine_decay(model: nn.Module, optim_wrapper: dict) -> dict[int, float]:
    from mmengine.logging import MMLogger  # noqa: PLC0415
    from mmengine.optim import build_optim_wrapper  # noqa: PLC0415

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # its INFO line per parameter takes seconds
    try:
        return _decay_by_parameter(build_optim_wrapper(model, optim_wrapper).optimizer)
    finally:
        logger.setLevel(level)


@pytest.mark.parametrize("size", SIZES)
def test_weight_decay_per_parameter_equals_mmengines_on_rtmpose(size):
    import_mmpose()
    config = mmpose_config(size)
    model = build_rtmpose(size, 21, (64, 96), (1.63, 2.12))
    ours = DistillConfig(student=StudentConfig(size, codec=CodecConfig((64, 96), (1.63, 2.12))))
    assert ours.optim.weight_decay == config.optim_wrapper["optimizer"]["weight_decay"]
    expected = _mmengine_decay(model, config.optim_wrapper.to_dict())
    assert _decay_by_parameter(build_optimizer(model, ours.optim)) == expected
    # with a decay (m's 0.05 on every size): the parameter groups themselves are MMPose's
    wrapper = config.optim_wrapper.to_dict()
    wrapper["optimizer"]["weight_decay"] = 0.05
    decayed = _decay_by_parameter(build_optimizer(model, replace(ours.optim, weight_decay=0.05)))
    assert decayed == _mmengine_decay(model, wrapper)
    assert 0.0 in decayed.values() and 0.05 in decayed.values()


def test_flat_decay_off_is_mmengines_flat_decay_mult_0():
    """The demo's setting (its results from before the recipe): no decay on 1-D gains."""
    import_mmpose()
    model = build_rtmpose("t", 21, (64, 96), (1.63, 2.12))
    wrapper = mmpose_config("t").optim_wrapper.to_dict()
    wrapper["optimizer"]["weight_decay"] = 0.05
    wrapper["paramwise_cfg"]["flat_decay_mult"] = 0
    config = OptimConfig(weight_decay=0.05, flat_decay=False)
    assert _decay_by_parameter(build_optimizer(model, config)) == _mmengine_decay(model, wrapper)


def test_a_stated_weight_decay_wins_over_the_size_default():
    assert DistillConfig(student=StudentConfig("t"),
                         optim=OptimConfig(weight_decay=0.05)).optim.weight_decay == 0.05
    assert DistillConfig(student=StudentConfig("m")).optim.weight_decay == 0.05


# -- EMA of weights and BatchNorm statistics: ExpMomentumEMA(update_buffers=True) ---------

def _small_bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def _train_steps(model: nn.Module, steps: int, seed: int):
    """Yield after each of ``steps`` SGD steps (BatchNorm in train mode: its running
    statistics and ``num_batches_tracked`` change every step)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=generator) * 3 + 1
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield


def _reference_ema(model: nn.Module, momentum: float, gamma: int):
    import_mmpose()
    from mmpose.engine.hooks.ema_hook import ExpMomentumEMA  # noqa: PLC0415

    return ExpMomentumEMA(model, momentum=momentum, gamma=gamma, update_buffers=True)


def _assert_same_state(ours: nn.Module, reference: nn.Module) -> None:
    theirs = reference.state_dict()
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs[name], rtol=0, atol=0, msg=name)


def test_ema_equals_expmomentumema_with_update_buffers_step_by_step():
    # a fast momentum and gamma, so the averages move far from the live model
    model, momentum, gamma = _small_bn_model(), 0.05, 4
    ours, reference = EMA(model, momentum, gamma), _reference_ema(model, momentum, gamma)
    for _ in _train_steps(model, 6, seed=1):
        ours.update(model)
        reference.update_parameters(model)
        _assert_same_state(ours.module, reference.module)
    bn, live_bn = ours.module[1], model[1]
    assert not torch.equal(bn.running_mean, live_bn.running_mean)  # averaged, not copied
    assert int(bn.num_batches_tracked) == 1 < int(live_bn.num_batches_tracked)


def test_ema_checkpoint_resumes_where_it_stopped():
    model = _small_bn_model()
    ema = EMA(model, 0.05, 4)
    steps = _train_steps(model, 6, seed=2)
    for _ in range(3):
        next(steps)
        ema.update(model)
    saved = ema.state_dict()
    assert set(saved) == {"module", "steps"}  # the layout earlier checkpoints hold
    resumed = EMA(_small_bn_model(), 0.05, 4)
    resumed.load_state_dict(saved)
    for _ in steps:
        ema.update(model)
        resumed.update(model)
    _assert_same_state(resumed.module, ema.module)
    assert resumed.steps == ema.steps == 6
