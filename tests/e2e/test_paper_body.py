"""The ``paper_body`` preset on real files at real sizes (``jobs/distill.py``).

MMPose's own configs as the teachers (RTMPose-m COCO 256x192, MPII 256x256 and Body8's
Halpe-26 256x192, from the installed mmpose) with random weights (their checkpoints cannot
be downloaded here), the RTMPose-s student at 192x256 on the 27-joint union, and real
files: the real COCO and MPII samples, and a Halpe-FullBody file (136 joints a person)
written from the COCO sample's people, as Halpe-FullBody annotates COCO val2017's images.
A few steps: the point is that every real format, MMPose config and size goes through.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from unipose_ray.skeleton import unified_skeleton

pytestmark = pytest.mark.ci

MMPOSE_CONFIGS = {
    "coco": "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py",
    "mpii": "body_2d_keypoint/rtmpose/mpii/rtmpose-m_8xb64-210e_mpii-256x256.py",
    "halpe26": "body_2d_keypoint/rtmpose/body8/rtmpose-m_8xb512-700e_body8-halpe26-256x192.py",
}


def _halpe_fullbody_file(coco_file: Path, out: Path) -> Path:
    """The COCO sample's people as Halpe-FullBody annotates them: 136 joints each (COCO's 17
    body joints, the rest unlabelled here)."""
    raw = json.loads(coco_file.read_text())
    for ann in raw["annotations"]:
        ann["keypoints"] = ann["keypoints"] + [0] * 3 * (136 - 17)
    raw["categories"][0]["keypoints"] = [f"joint_{i}" for i in range(136)]
    out.write_text(json.dumps(raw))
    return out


@pytest.fixture(scope="module")
def paper_body_run(ray_cluster, real_samples, tmp_path_factory, load_job):
    import mmpose
    import torch

    from unipose_ray.models import build_from_config
    from unipose_ray.models.checkpoints import save_checkpoint

    tmp = tmp_path_factory.mktemp("paper_body")
    configs = Path(mmpose.__path__[0]) / ".mim" / "configs"
    torch.manual_seed(0)
    teachers = []
    for i, (name, config) in enumerate(MMPOSE_CONFIGS.items()):
        checkpoint = save_checkpoint(build_from_config(configs / config), tmp / f"{name}.pth")
        teachers += [f"teachers.{i}.config={configs / config}",
                     f"teachers.{i}.checkpoint={checkpoint}", f"teachers.{i}.num_gpus=0",
                     f"teachers.{i}.num_cpus=0.5"]
    coco, mpii = real_samples / "coco", real_samples / "mpii"
    halpe = _halpe_fullbody_file(coco / "test_coco.json", tmp / "halpe_val_v1.json")
    data = [f"data.coco_train={{ann_file: {coco / 'test_coco.json'}, img_dir: {coco}}}",
            f"data.coco_val={{ann_file: {coco / 'test_coco.json'}, img_dir: {coco}}}",
            f"data.mpii_train={{ann_file: {mpii / 'test_mpii.json'}, img_dir: {mpii}}}",
            "data.mpii_val=null",  # the samples have no head boxes: no PCKh
            f"data.halpe26_train={{ann_file: {halpe}, img_dir: {coco}}}",
            f"data.halpe26_val={{ann_file: {halpe}, img_dir: {coco}}}"]
    small = ["student.backbone_checkpoint=null", "run.num_workers=1", "run.use_gpu=false",
             "run.cpus_per_worker=1", "run.data_actors=0", "run.eval_workers=0",
             "run.resource_wait_s=0", "run.checkpoint_every_steps=0", "run.max_steps=2",
             "run.val_every_epochs=1", "optim.epochs=1", "optim.batch_size=4",
             "optim.warmup_steps=1", "augment.stage2_epochs=0", "baseline=false"]
    out = tmp / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = load_job("distill").main(["--config", "paper_body", "--output-dir", str(out),
                                            *data, *teachers, *small])
    return out, results, printed.getvalue()


def test_mmposes_configs_teach_the_27_joint_student_on_real_files(paper_body_run):
    import torch

    out, results, printed = paper_body_run
    assert set(results) == {"teacher_coco", "teacher_mpii", "teacher_halpe26",
                            "student_distilled"}
    for row, metrics in results.items():
        assert {"coco_AP", "halpe26_AP", "score"} <= set(metrics), row
    assert "halpe26_AP" in printed
    best = out / "models" / "paper_body_rtmpose_s" / "best.pth"
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    names = checkpoint["meta"]["dataset_meta"]["keypoint_id2name"]
    assert tuple(names[i] for i in sorted(names)) == unified_skeleton(
        ["coco", "mpii", "halpe26"]).names
    head = checkpoint["state_dict"]["head.final_layer.weight"]
    assert head.shape[0] == 27  # RTMPose-s's head, one channel a joint
