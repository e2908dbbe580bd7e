"""The MMPose adapter: real configs, safe checkpoints, frozen teachers, MMPose-loadable saves."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from unipose_ray import models as M
from unipose_ray import skeleton
from unipose_ray.models import checkpoints as C
from unipose_ray.models.compat import import_mmpose

import_mmpose()
import mmpose

CONFIGS = os.path.join(os.path.dirname(mmpose.__file__), ".mim/configs/body_2d_keypoint/rtmpose")
COCO_T = f"{CONFIGS}/coco/rtmpose-t_8xb256-420e_coco-256x192.py"
COCO_S = f"{CONFIGS}/coco/rtmpose-s_8xb256-420e_coco-256x192.py"
COCO_M = f"{CONFIGS}/coco/rtmpose-m_8xb256-420e_coco-256x192.py"
MPII_M = f"{CONFIGS}/mpii/rtmpose-m_8xb64-210e_mpii-256x256.py"


class NotAWeight:
    """An arbitrary class: unpickling it must be refused by default."""

    def __init__(self, value: int) -> None:
        self.value = value


def _mmpose_model(config_path: str, num_keypoints: int | None = None):
    """MMPose's own ``init_model`` on the real config, with only the mmcv-lite scope fix."""
    from mmengine.config import Config
    from mmpose.apis import init_model

    cfg = Config.fromfile(config_path)
    cfg.model.backbone.pop("_scope_")
    if num_keypoints is not None:
        cfg.model.head.out_channels = num_keypoints
    return init_model(cfg, None, device="cpu")


def _rgb_images(n: int, w: int, h: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8).float()


def _mmpose_forward(model, rgb: torch.Tensor):
    """MMPose's path: BGR images (as cv2 loads them) -> its data preprocessor -> network."""
    from mmpose.structures import PoseDataSample

    data = {"inputs": list(rgb.flip(1)), "data_samples": [PoseDataSample() for _ in rgb]}
    inputs = model.data_preprocessor(data, training=False)["inputs"]
    with torch.no_grad():
        return model(inputs, None, mode="tensor")


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.1 * torch.rand(m.running_var.shape, generator=g))


# --- Architecture --------------------------------------------------------------------------


def test_rtmpose_m_coco_from_the_real_config_has_the_published_size():
    model = M.build_from_config(COCO_M)
    assert sum(p.numel() for p in model.parameters()) == 13_587_611
    assert model.spec == M.PoseModelSpec(17, (192, 256), 2.0, (4.9, 5.66))
    assert model.spec.simcc_bins == (384, 512)
    mpii = M.build_from_config(MPII_M)
    assert mpii.spec == M.PoseModelSpec(16, (256, 256), 2.0, (5.66, 5.66))
    x, y = mpii(_rgb_images(1, 256, 256))
    assert x.shape == (1, 16, 512) and y.shape == (1, 16, 512)


@pytest.mark.parametrize(("size", "config"), [("t", COCO_T), ("s", COCO_S)])
def test_build_rtmpose_matches_mmposes_config(size, config):
    ours = M.build_rtmpose(size, 17)
    ref = _mmpose_model(config)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.estimator.state_dict().items()}
    assert ours_shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert ours.spec == M.spec_from_config(ref.cfg)


def test_build_rtmpose_for_21_keypoints():
    model = M.build_rtmpose("t", 21).eval()
    x, y = model(_rgb_images(2, 192, 256))
    assert x.shape == (2, 21, 384) and y.shape == (2, 21, 512)
    with pytest.raises(ValueError, match=r"\(B, 3, 256, 192\)"):
        model(_rgb_images(1, 256, 256))
    with pytest.raises(ValueError, match="sigma"):
        M.build_rtmpose("t", 21, input_size=(224, 320))


# --- Checkpoints ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mmpose_coco_t():
    model = _mmpose_model(COCO_T)
    _randomise_bn(model)
    return model.eval()


def _runner_checkpoint(model, prefix: str = "") -> dict:
    """The dict mmengine's Runner.save_checkpoint writes, numpy objects included."""
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("test_models_hub")
    hub.update_scalar("train/loss", 0.5)
    hub.update_scalar("train/loss", np.float64(0.25))
    hub.update_info("epoch", 3)
    dataset_meta = skeleton.COCO.dataset_meta()  # holds np.ndarray sigmas
    return {
        "meta": {
            "dataset_meta": dataset_meta,
            "seed": np.int64(21),
            "lr": np.float64(4e-3),
            "epoch": 3,
            "iter": 300,
            "mmengine_version": "0.10.7",
            "flip": np.array([1, 0, 2]),
        },
        "state_dict": {prefix + k: v for k, v in model.state_dict().items()},
        "message_hub": hub.state_dict(),
    }


@pytest.mark.parametrize("prefix", ["", "module."])
def test_mmengine_checkpoint_loads_safely_and_matches_mmpose(mmpose_coco_t, tmp_path, prefix):
    from mmengine.runner import save_checkpoint

    path = tmp_path / "epoch_3.pth"
    save_checkpoint(_runner_checkpoint(mmpose_coco_t, prefix), str(path))
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path)  # plain torch >= 2.6 refuses the numpy objects

    ours = M.build_from_config(COCO_T, path)  # default: safe loading
    ours.eval()
    images = _rgb_images(2, 192, 256)
    ref_x, ref_y = _mmpose_forward(mmpose_coco_t, images)
    with torch.no_grad():
        x, y = ours(images)
    torch.testing.assert_close(x, ref_x, rtol=0, atol=1e-6)
    torch.testing.assert_close(y, ref_y, rtol=0, atol=1e-6)
    assert ours.estimator.dataset_meta["num_keypoints"] == 17


def test_checkpoint_with_other_keypoint_count_names_the_tensor(tmp_path):
    path = tmp_path / "mpii16.pth"
    torch.save({"state_dict": M.build_rtmpose("t", 16).estimator.state_dict()}, path)
    with pytest.raises(C.CheckpointError) as err:
        M.build_from_config(COCO_T, path)
    message = str(err.value)
    assert "head.final_layer.weight: checkpoint (16, 384, 7, 7), model expects (17, 384, 7, 7)" in (
        message
    )
    assert "head.final_layer.bias" in message


def test_checkpoint_missing_and_unexpected_keys_are_listed(mmpose_coco_t, tmp_path):
    state = dict(mmpose_coco_t.state_dict())
    state.pop("head.cls_x.weight")
    state["head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(
        C.CheckpointError, match=r"missing keys \(1\): \['head.cls_x.weight'\]"
    ) as e:
        M.build_from_config(COCO_T, path)
    assert "unexpected keys (1): ['head.extra.weight']" in str(e.value)


def test_arbitrary_pickled_object_is_refused_unless_trusted(mmpose_coco_t, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": mmpose_coco_t.state_dict(), "meta": {"x": NotAWeight(1)}}, path)
    with pytest.raises(C.CheckpointError, match="trust_checkpoint=True") as err:
        M.build_from_config(COCO_T, path)
    assert "NotAWeight" in str(err.value)
    model = M.build_from_config(COCO_T, path, trust_checkpoint=True)
    torch.testing.assert_close(
        model.estimator.state_dict()["head.cls_x.weight"],
        mmpose_coco_t.state_dict()["head.cls_x.weight"],
    )


def test_backbone_from_an_mmengine_pose_checkpoint_leaves_the_head_fresh(mmpose_coco_t, tmp_path):
    """RTMPose's init_cfg (prefix='backbone.'): the 17-joint COCO model's backbone seeds a
    21-joint student; every backbone tensor is copied, the head keeps its own init."""
    from mmengine.runner import save_checkpoint

    path = tmp_path / "cspnext-t_udp-aic-coco.pth"
    save_checkpoint(_runner_checkpoint(mmpose_coco_t, "module."), str(path))
    student = M.build_rtmpose("t", 21, (64, 96), (1.63, 2.12))
    head_before = {k: v.clone() for k, v in student.estimator.head.state_dict().items()}
    C.load_backbone(student, path)

    source = mmpose_coco_t.backbone.state_dict()
    loaded = student.estimator.backbone.state_dict()
    assert loaded.keys() == source.keys()
    for name, tensor in source.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)
    for name, tensor in student.estimator.head.state_dict().items():
        torch.testing.assert_close(tensor, head_before[name], rtol=0, atol=0)


def test_backbone_of_another_size_or_without_backbone_is_refused(tmp_path):
    other = tmp_path / "rtmpose-s.pth"
    C.save_checkpoint(M.build_rtmpose("s", 17), other)
    with pytest.raises(C.CheckpointError, match=r"does not fit this RTMPose size") as err:
        C.load_backbone(M.build_rtmpose("t", 21), other)
    assert "stem.0.conv.weight" in str(err.value)  # the first mismatched tensor is named

    head_only = tmp_path / "head.pth"
    torch.save({"state_dict": M.build_rtmpose("t", 17).estimator.head.state_dict()}, head_only)
    with pytest.raises(C.CheckpointError, match="no 'backbone.\\*' tensors"):
        C.load_backbone(M.build_rtmpose("t", 21), head_only)


# --- Teachers ------------------------------------------------------------------------------


def test_frozen_teacher_stays_in_eval_mode_and_keeps_bn_stats():
    teacher = M.FrozenTeacher(M.build_rtmpose("t", 17))
    parent = torch.nn.ModuleDict({"teacher": teacher, "head": torch.nn.Linear(2, 2)})
    before = {k: v.clone() for k, v in teacher.state_dict().items() if "running" in k}
    assert before
    parent.train()  # what a training loop does
    assert parent["head"].training
    assert not any(m.training for m in teacher.modules())
    x, y = teacher(_rgb_images(2, 192, 256))
    assert x.grad_fn is None and y.grad_fn is None
    assert not any(p.requires_grad for p in teacher.parameters())
    after = {k: v for k, v in teacher.state_dict().items() if "running" in k}
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    # the control: a plain model in train mode does move its BN stats
    plain = M.build_rtmpose("t", 17).train()
    stats = plain.estimator.backbone.stem[0].bn.running_mean.clone()
    plain(_rgb_images(2, 192, 256))
    assert not torch.equal(stats, plain.estimator.backbone.stem[0].bn.running_mean)


# --- Student checkpoints for MMPose ----------------------------------------------------------


def test_saved_student_loads_in_mmpose(tmp_path):
    from mmengine.runner import load_checkpoint

    student = M.build_rtmpose("t", 21)
    _randomise_bn(student, seed=3)
    student.eval()
    path = C.save_checkpoint(
        student,
        tmp_path / "student.pth",
        dataset_meta=skeleton.UNIFIED.dataset_meta(),
        extra_meta={"epoch": 7, "val_score": np.float64(0.5)},
    )
    ckpt = torch.load(path)  # torch's default weights_only=True, no allow-list needed
    assert set(ckpt) == {"state_dict", "meta"}
    assert ckpt["meta"]["dataset_meta"]["num_keypoints"] == 21
    assert ckpt["meta"]["epoch"] == 7

    mm = _mmpose_model(COCO_T, num_keypoints=21)
    load_checkpoint(mm, str(path), map_location="cpu", strict=True)
    mm.eval()
    images = _rgb_images(2, 192, 256, seed=1)
    ref_x, ref_y = _mmpose_forward(mm, images)
    with torch.no_grad():
        x, y = student(images)
    torch.testing.assert_close(x, ref_x, rtol=0, atol=0)
    torch.testing.assert_close(y, ref_y, rtol=0, atol=0)

    # and back through our own loader
    again = M.build_rtmpose("t", 21)
    C.load_weights(again, path)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(images)[0], x, rtol=0, atol=0)
