"""AIC, CrowdPose and Halpe-26 files: valid in their formats (pycocotools, xtcocotools'
crowd evaluation, MMPose's dataset classes), labelled in their datasets' joint orders,
agreeing with the unified files; feet drawn where the Halpe files put them."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO as CocoApi

from unipose_ray.data.synthetic import (
    SyntheticConfig,
    SyntheticDataset,
    dataset_paths,
    generate_dataset,
    render_sample,
)
from unipose_ray.data.synthetic.annotations import crowd_index
from unipose_ray.data.synthetic.feet import add_feet
from unipose_ray.data.synthetic.figure import J, sample_figure
from unipose_ray.data.synthetic.scene import PersonLabel
from unipose_ray.skeleton import AIC, CROWDPOSE, HALPE26, UNIFIED, mapping_for, unified_skeleton
from unipose_ray.skeleton.keypoints import FEET

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = SyntheticConfig(seed=5, coco_train=1, coco_val=2, mpii_train=1, mpii_val=2,
                         aic_train=2, aic_val=3, crowdpose_train=2, crowdpose_val=4,
                         halpe26_train=2, halpe26_val=4)
SKELETON = unified_skeleton(("coco", "mpii", "halpe26"))  # 27: the 21, then the feet
COCO_STYLE = {"aic": AIC, "crowdpose": CROWDPOSE, "halpe26": HALPE26}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SyntheticDataset:
    return generate_dataset(tmp_path_factory.mktemp("formats"), CONFIG, progress=False)


def _load(path: Path):
    return json.loads(Path(path).read_text())


def _mmpose_dataset(cls_name: str, data: SyntheticDataset, dataset: str, **kwargs):
    from unipose_ray.models.compat import install_mmcv_ops_placeholder

    install_mmcv_ops_placeholder()  # what import_mmpose does, without the slow mmpose.models
    import mmpose.datasets

    cls = getattr(mmpose.datasets, cls_name)
    return cls(ann_file=str(data.annotation_file(dataset, "val")), data_root="",
               data_prefix=dict(img=str(data.images_dir(dataset, "val")) + "/"),
               test_mode=True, lazy_init=False, **kwargs)


def test_config_writes_only_datasets_with_images_and_records_them():
    plain = SyntheticConfig()
    assert plain.datasets == ("coco", "mpii") and plain.skeleton == UNIFIED
    assert not plain.draws_feet and "halpe26_train" not in plain.record()
    assert CONFIG.datasets == ("coco", "mpii", "aic", "crowdpose", "halpe26")
    assert CONFIG.skeleton == SKELETON and CONFIG.draws_feet
    assert CONFIG.record()["halpe26_val"] == 4
    assert SyntheticConfig(crowdpose_val=1).skeleton == UNIFIED  # no joint of its own
    with pytest.raises(ValueError, match="halpe26_train"):
        SyntheticConfig(halpe26_train=-1)


def test_layout_is_what_dataset_paths_says(data):
    assert data == dataset_paths(data.root, CONFIG)
    assert data.skeleton.num_keypoints == 27
    for dataset in CONFIG.datasets:
        for split in ("train", "val"):
            images = sorted(data.images_dir(dataset, split).glob("*.jpg"))
            assert len(images) == CONFIG.num_images(dataset, split)
            assert data.annotation_file(dataset, split).is_file()
        assert data.unified_val_file(dataset).name == "unified27_val.json"
        assert data.unified_val_file(dataset).is_file()
    assert data.raw_annotation_file("aic", "train").is_file()
    assert dataset_paths(data.root).unified_val_file("coco").name == "unified21_val.json"
    with pytest.raises(KeyError, match="aic_train"):
        dataset_paths(data.root).annotation_file("aic", "train")


@pytest.mark.parametrize("dataset", ["aic", "crowdpose", "halpe26"])
def test_coco_style_file_loads_in_pycocotools_in_the_datasets_order(data, dataset):
    keypoints = COCO_STYLE[dataset]
    api = CocoApi(str(data.annotation_file(dataset, "val")))
    assert api.loadCats(1)[0]["keypoints"] == list(keypoints.names)
    assert len(api.getImgIds()) == CONFIG.num_images(dataset, "val")
    unified = {a["id"]: a for a in _load(data.unified_val_file(dataset))["annotations"]}
    own = mapping_for(dataset, SKELETON).to_unified
    assert len(unified) == len(api.getAnnIds()) > 0
    for ann in api.loadAnns(api.getAnnIds()):
        kp = np.array(ann["keypoints"]).reshape(-1, 3)
        assert kp.shape == (keypoints.num_keypoints, 3) and set(kp[:, 2]) <= {0, 1, 2}
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum()) > 0
        truth = np.array(unified[ann["id"]]["keypoints"]).reshape(27, 3)
        np.testing.assert_array_equal(kp, truth[own])  # the dataset's joints, in its order


def test_dataset_joints_are_the_named_unified_joints(data):
    """AIC/CrowdPose neck = upper_neck, their head tops = head_top; Halpe head, neck, hip =
    head_top, upper_neck, pelvis."""
    pairs = [("aic", "neck", "upper_neck"), ("aic", "head_top", "head_top"),
             ("crowdpose", "top_head", "head_top"), ("crowdpose", "neck", "upper_neck"),
             ("halpe26", "head", "head_top"), ("halpe26", "neck", "upper_neck"),
             ("halpe26", "hip", "pelvis"), ("halpe26", "left_heel", "left_heel")]
    for dataset, joint, unified_joint in pairs:
        own = _load(data.annotation_file(dataset, "val"))["annotations"]
        unified = _load(data.unified_val_file(dataset))["annotations"]
        i, u = COCO_STYLE[dataset].index(joint), SKELETON.index(unified_joint)
        for a, b in zip(own, unified, strict=True):
            assert a["keypoints"][3 * i : 3 * i + 3] == b["keypoints"][3 * u : 3 * u + 3]


@pytest.mark.parametrize(("cls_name", "dataset", "extra"), [
    ("AicDataset", "aic", {}),
    ("CrowdPoseDataset", "crowdpose", {}),
    # MMPose's HalpeDataset is Halpe-FullBody (136 joints): the 26-joint file is a COCO-style
    # dataset with Halpe-26's metainfo, as the Body8 recipe's converted data is
    ("CocoDataset", "halpe26", {"metainfo": {"from_file": "configs/_base_/datasets/halpe26.py"}}),
])  # fmt: skip
def test_file_loads_in_mmpose_with_the_true_keypoints(data, cls_name, dataset, extra):
    mm = _mmpose_dataset(cls_name, data, dataset, **extra)
    anns = _load(data.annotation_file(dataset, "val"))["annotations"]
    assert mm.metainfo["num_keypoints"] == COCO_STYLE[dataset].num_keypoints
    assert [mm.metainfo["keypoint_id2name"][k] for k in range(mm.metainfo["num_keypoints"])] \
        == list(COCO_STYLE[dataset].names)
    assert len(mm) == len(anns) > 0
    for index, ann in enumerate(anns):
        info = mm.get_data_info(index)
        kp = np.array(ann["keypoints"]).reshape(-1, 3)
        np.testing.assert_allclose(info["keypoints"][0], kp[:, :2], atol=1e-4)
        np.testing.assert_array_equal(info["keypoints_visible"][0], kp[:, 2] > 0)
        assert Path(info["img_path"]).is_file() and info["img_id"] == ann["image_id"]
        if dataset == "crowdpose":
            assert 0.0 <= info["crowd_index"] <= 1.0


def test_crowdpose_file_runs_the_crowd_evaluation(data, tmp_path):
    """xtcocotools' ``keypoints_crowd`` (what MMPose's CrowdPose metric runs) reads the
    file's crowdIndex; the truth as predictions scores AP 1."""
    from xtcocotools.coco import COCO as XtCoco
    from xtcocotools.cocoeval import COCOeval

    path = data.annotation_file("crowdpose", "val")
    indices = [image["crowdIndex"] for image in _load(path)["images"]]
    assert all(0.0 <= c <= 1.0 for c in indices) and max(indices) > 0
    gt = XtCoco(str(path))
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                "score": 1.0} for a in gt.loadAnns(gt.getAnnIds())]
    (tmp_path / "results.json").write_text(json.dumps(results))
    evaluation = COCOeval(gt, gt.loadRes(str(tmp_path / "results.json")), "keypoints_crowd",
                          np.array(CROWDPOSE.sigmas), use_area=False)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def _person(box, points, visible=None) -> PersonLabel:
    points = np.asarray(points, dtype=float)
    v = np.full(len(points), 2, dtype=np.int8) if visible is None else np.asarray(visible)
    return PersonLabel(points, v, np.asarray(box, dtype=float), 1.0, np.zeros(4))


def test_crowd_index_is_the_papers_ratio():
    """Mean over people of (others' labelled joints in my box) / (my labelled joints)."""
    a = _person([0, 0, 10, 10], [[1, 1], [2, 2], [3, 3], [4, 4]])
    b = _person([8, 8, 10, 10], [[9, 9], [12, 12], [15, 15], [30, 30]], [2, 2, 2, 0])
    joints = np.arange(4)
    # a's box holds one of b's labelled joints (9, 9): 1/4; b's box holds none of a's: 0/3
    assert crowd_index([a, b], joints) == pytest.approx((1 / 4 + 0 / 3) / 2)
    assert crowd_index([a], joints) == 0.0 and crowd_index([], joints) == 0.0
    crowd = [_person([0, 0, 10, 10], [[5, 5]])] * 3  # two others' joints in each box: 2 > 1
    assert crowd_index(crowd, np.arange(1)) == 1.0


def test_aic_raw_list_matches_the_coco_style_file(data):
    for split in ("train", "val"):
        raw = _load(data.raw_annotation_file("aic", split))
        coco = _load(data.annotation_file("aic", split))
        files = {i["id"]: Path(i["file_name"]).stem for i in coco["images"]}
        assert [e["image_id"] for e in raw] == [files[i] for i in sorted(files)]
        anns = iter(coco["annotations"])
        flags = {2: 1, 1: 2, 0: 3}  # COCO v -> AI Challenger v
        for entry in raw:
            assert (data.images_dir("aic", split) / f"{entry['image_id']}.jpg").is_file()
            assert list(entry["keypoint_annotations"]) == list(entry["human_annotations"])
            for name, values in entry["keypoint_annotations"].items():
                ann = next(anns)
                assert files[ann["image_id"]] == entry["image_id"] and name.startswith("human")
                raw_kp = np.array(values).reshape(14, 3)
                kp = np.array(ann["keypoints"]).reshape(14, 3)
                np.testing.assert_array_equal(raw_kp[:, 2], [flags[v] for v in kp[:, 2]])
                np.testing.assert_allclose(raw_kp[:, :2], kp[:, :2], atol=0.51)
                x, y, w, h = ann["bbox"]
                np.testing.assert_allclose(entry["human_annotations"][name],
                                           [x, y, x + w, y + h], atol=0.51)


def test_halpe_feet_are_labelled_and_lie_on_drawn_feet(data):
    """Each visible foot joint is a pixel the feet changed: the same scene drawn without feet
    differs there (feet come from their own random stream)."""
    feetless = replace(CONFIG, halpe26_train=0, halpe26_val=0)
    feet = [SKELETON.index(n) for n in FEET]
    checked = 0
    for index in range(CONFIG.halpe26_val):
        image, labels = render_sample(CONFIG, "halpe26", "val", index)
        plain, _ = render_sample(feetless, "halpe26", "val", index)
        for label in labels:
            for k in feet:
                if label.visibility[k] == 2:
                    x, y = np.round(label.keypoints[k]).astype(int)
                    assert np.abs(image[y, x].astype(int) - plain[y, x]).max() > 20
                    checked += 1
    assert checked >= 10
    anns = _load(data.annotation_file("halpe26", "val"))["annotations"]
    v = np.array([a["keypoints"] for a in anns]).reshape(len(anns), 26, 3)[:, 20:, 2]
    assert (v == 2).sum() > 0 and (v == 1).sum() > 0  # seen, and hidden by their own foot


def test_unified_files_of_the_other_datasets_carry_feet(data):
    """Every image of a run with Halpe-26 shows feet, so COCO's unified file labels them."""
    for dataset in ("coco", "aic", "crowdpose"):
        content = _load(data.unified_val_file(dataset))
        assert content["categories"][0]["keypoints"] == list(SKELETON.names)
        kp = np.array([a["keypoints"] for a in content["annotations"]]).reshape(-1, 27, 3)
        assert (kp[:, 21:, 2] > 0).any()


def _hue_deg(image: np.ndarray, xy: np.ndarray) -> float:
    x, y = np.round(xy).astype(int)
    return float(cv2.cvtColor(image[y : y + 1, x : x + 1], cv2.COLOR_BGR2HSV_FULL)[0, 0, 0]) \
        * 360 / 256


def test_left_foot_joints_are_warm_and_right_ones_cool():
    feet = [SKELETON.index(n) for n in FEET]
    checked, wrong = 0, []
    for index in range(8):
        image, labels = render_sample(CONFIG, "halpe26", "train", index)
        for label in labels:
            for k in feet:
                if label.visibility[k] == 2:
                    hue = _hue_deg(image, label.keypoints[k])
                    checked += 1
                    if (hue <= 55 or hue >= 350) != SKELETON.names[k].startswith("left_"):
                        wrong.append((index, SKELETON.names[k], round(hue)))
    assert checked > 30
    assert len(wrong) <= 0.05 * checked, wrong


@pytest.mark.parametrize(("yaw", "heel_hidden", "toes_hidden"), [
    (0.0, True, False),  # facing the camera: toes towards it, heels behind the feet
    (np.pi, False, True),  # the back: heels towards the camera
    (np.pi / 2, False, False),  # side view, facing image right: feet along the image x axis
])  # fmt: skip
def test_foot_geometry_follows_the_yaw(yaw, heel_hidden, toes_hidden):
    fig = sample_figure(np.random.default_rng(0), 200.0)
    kp = fig.keypoints.copy()
    for side in ("left", "right"):  # straight legs, shins pointing down
        kp[J[f"{side}_ankle"]] = kp[J[f"{side}_knee"]] + [0, 50]
    fig = add_feet(np.random.default_rng(1), replace(fig, keypoints=kp, yaw=yaw))
    point = {name: fig.feet.keypoints[i] for i, name in enumerate(FEET)}
    state = {name: fig.feet.state[i] for i, name in enumerate(FEET)}
    for side in ("left", "right"):
        ankle = kp[J[f"{side}_ankle"]]
        toe, small, heel = (point[f"{side}_{p}"] for p in ("big_toe", "small_toe", "heel"))
        assert state[f"{side}_heel"] == heel_hidden
        assert state[f"{side}_big_toe"] == state[f"{side}_small_toe"] == toes_hidden
        assert heel[1] > ankle[1] and toe[1] > ankle[1] - 10  # on the ground, under the ankle
        reach = max(np.linalg.norm(p - ankle) for p in (toe, small, heel))
        assert 6 < reach < 40  # a foot is 0.15 of 200 px long, foreshortened when end-on
        if yaw == 0.0:  # toes nearer the camera: lower on screen; big toe towards the middle
            assert toe[1] > heel[1] and small[1] > heel[1]
            assert (toe[0] < small[0]) == (side == "left")
        if yaw == np.pi / 2:
            assert toe[0] - ankle[0] > 15 and heel[0] < ankle[0]


def test_make_dataset_job_writes_the_new_formats(tmp_path, capsys):
    path = REPO_ROOT / "jobs" / "make_dataset.py"
    spec = importlib.util.spec_from_file_location("make_dataset", path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    data = job.main(["--out", str(tmp_path), "--seed", "2", "--coco-train", "1", "--coco-val",
                     "0", "--mpii-train", "0", "--mpii-val", "0", "--halpe26-train", "1",
                     "--aic-val", "1", "--crowdpose-train", "1"])
    out = capsys.readouterr().out
    assert "wrote 4 images" in out
    for file in (data.annotation_file("halpe26", "train"), data.raw_annotation_file("aic", "val"),
                 data.annotation_file("crowdpose", "train"), data.unified_val_file("coco")):
        assert file.is_file() and str(file) in out
    assert "27 unified keypoints" in out
