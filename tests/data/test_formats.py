import json
import subprocess
import sys

import pytest
from scipy.io import savemat

from unipose_ray.cli import InputError, UsageError, entry
from unipose_ray.data import formats
from unipose_ray.data.formats import (
    AIC,
    AIC_RAW,
    COCO,
    COCO_RESULTS,
    CROWDPOSE,
    EMPTY,
    EMPTY_LIST,
    HALPE26,
    MPII,
    MPII_MAT,
    NOT_JSON,
    UNKNOWN_JSON,
    AnnotationError,
    AnnotationFormatError,
    annotation_format,
    check_annotation_format,
)

REAL = {"coco": "coco/test_coco.json", "dets": "coco/test_coco_det_AP_H_56.json",
        "mpii": "mpii/test_mpii.json", "image": "coco/000000000785.jpg"}


@pytest.fixture(scope="module")
def files(real_samples, tmp_path_factory):
    """The real samples, a .mat, and small generated files of every other kind."""
    tmp = tmp_path_factory.mktemp("formats")
    paths = {name: real_samples / rel for name, rel in REAL.items()}
    savemat(tmp / "mpii_gt_val.mat", {"headboxes_src": [[[1.0]], [[2.0]]]})
    aic_list = [  # AI Challenger's keypoint_*_annotations_*.json, as its documentation shows
        {"url": "http://www.sinaimg.cn/dy/slidenews/2_img/2016_39/730_1947359_260964.jpg",
         "image_id": "ff945ae2e729f24eea992814639d59b3bdec8bd8",
         "keypoint_annotations": {
             "human1": [400, 183, 1, 380, 319, 1, 358, 416, 1, 559, 217, 1, 557, 357, 1, 590,
                        294, 1, 428, 444, 1, 394, 664, 1, 0, 0, 3, 511, 445, 1, 504, 662, 1,
                        0, 0, 3, 466, 51, 1, 485, 179, 1],
             "human2": [610, 240, 2, 625, 330, 1, 0, 0, 3, 700, 238, 1, 712, 331, 2, 720, 402,
                        1, 630, 430, 1, 628, 560, 2, 625, 650, 1, 690, 432, 1, 694, 560, 1,
                        698, 652, 2, 660, 120, 1, 662, 210, 1]},
         "human_annotations": {"human1": [298, 36, 627, 683], "human2": [590, 100, 740, 672]}},
    ]
    generated = {
        "aic_list.json": json.dumps(aic_list),
        "empty.json": "", "blank.json": " \n\t", "empty_list.json": "[]",
        "cut.json": '{"images": [', "scalar.json": "3", "other.json": '{"info": {}, "x": []}',
        "aic_raw.json": json.dumps([{"image_id": "a", "keypoint_annotations": {}}]),
        "numbers.json": "[1, 2]",
        "keypoint_results.json": json.dumps([{"image_id": 1, "category_id": 1,
                                              "keypoints": [0.0] * 51, "score": 0.9}]),
    }
    for name, text in generated.items():
        (tmp / name).write_text(text)
        paths[name] = tmp / name
    paths["mat"] = tmp / "mpii_gt_val.mat"
    return paths


@pytest.mark.parametrize(("name", "expected"), [
    ("coco", COCO), ("dets", COCO_RESULTS), ("mpii", MPII), ("image", NOT_JSON),
    ("mat", MPII_MAT), ("empty.json", EMPTY), ("blank.json", EMPTY),
    ("empty_list.json", EMPTY_LIST), ("cut.json", NOT_JSON), ("scalar.json", UNKNOWN_JSON),
    ("other.json", UNKNOWN_JSON), ("aic_raw.json", AIC_RAW), ("aic_list.json", AIC_RAW),
    ("numbers.json", UNKNOWN_JSON), ("keypoint_results.json", COCO_RESULTS),
])
def test_each_kind_of_file_is_told_apart(files, name, expected):
    assert annotation_format(files[name]) == expected


def _real_scale(path, out, copies):
    """``path``'s content with its list (MPII, detections) or its images and annotations
    repeated ``copies`` times, written indented like the real files, then cut off
    mid-way: only a reader of a bounded prefix can still tell its format."""
    content = json.loads(path.read_text())
    if isinstance(content, list):
        content = content * copies
    else:
        content = dict(content, images=content["images"] * copies,
                       annotations=content["annotations"] * copies)
    text = json.dumps(content, indent=4)
    assert len(text) > 2 * formats.PEEKS[-1]
    out.write_text(text[: len(text) // 2])
    return out


@pytest.mark.parametrize(("name", "expected", "copies"), [
    ("coco", COCO, 60), ("dets", COCO_RESULTS, 100), ("mpii", MPII, 400),
    ("aic_list.json", AIC_RAW, 1000)])
def test_a_large_file_is_told_from_its_first_bytes(files, tmp_path, name, expected, copies):
    big = _real_scale(files[name], tmp_path / f"big_{name}.json", copies)
    assert annotation_format(big) == expected


def test_top_level_keys_past_the_first_look_are_found_up_to_the_second(tmp_path):
    padded = tmp_path / "padded.json"
    info = {"description": "x" * (200 << 10)}  # COCO's keys only after 200 KiB
    padded.write_text(json.dumps({"info": info, "images": [], "annotations": []}) + " " * (2 << 20))
    assert annotation_format(padded) == COCO
    lost = tmp_path / "lost.json"  # nothing known in the first MiB
    lost.write_text(json.dumps({"info": "x" * (2 << 20), "images": []}))
    assert annotation_format(lost) == UNKNOWN_JSON
    binary = tmp_path / "big.bin"
    binary.write_bytes(b"\x89PNG" + bytes(range(256)) * 1024)
    assert annotation_format(binary) == NOT_JSON


@pytest.mark.parametrize(("name", "expected", "field", "says"), [
    ("mpii", COCO, "data.coco_train.ann_file",
     "looks like an MPII annotation list (MMPose's mpii_*.json), not a COCO person-keypoints "
     "file: give it as data.mpii_train.ann_file, or point this field at person_keypoints_*.json"),
    ("coco", MPII, "data.mpii_val.ann_file",
     "looks like a COCO annotation file (a JSON object with images/annotations/categories), "
     "not an MPII annotation list (MMPose's mpii_*.json): give it as data.coco_val.ann_file, "
     "or point this field at MMPose's mpii_*.json"),
    ("dets", COCO, "data.coco_val.ann_file",
     "looks like a COCO results file (a JSON list of detections or predictions, "
     "{image_id, bbox, score}), not a COCO person-keypoints file: give it as "
     "data.coco_val.bbox_file, or point this field at person_keypoints_*.json"),
    ("dets", MPII, "data.mpii_train.ann_file", "give it as data.coco_val.bbox_file"),
    ("coco", COCO_RESULTS, "data.coco_val.bbox_file",
     "not a COCO results file of person detections: give it as data.coco_val.ann_file, or "
     "point this field at a person detections file"),
    ("mpii", MPII_MAT, "data.mpii_val.headbox_file",
     "looks like an MPII annotation list (MMPose's mpii_*.json), not MPII's mpii_gt_val.mat: "
     "give it as data.mpii_val.ann_file"),
    ("mat", MPII, "data.mpii_train.ann_file",
     "looks like a MATLAB .mat file (such as MPII's mpii_gt_val.mat or "
     "mpii_human_pose_v1_u12_1.mat), not an MPII annotation list (MMPose's mpii_*.json): if it "
     "is mpii_gt_val.mat (head boxes), give it as data.mpii_val.headbox_file, or point this "
     "field at MMPose's mpii_*.json"),
    ("mat", COCO, "data.coco_train.ann_file", "not a COCO person-keypoints file"),
    ("empty.json", COCO, "data.coco_train.ann_file",
     "is empty, not a COCO person-keypoints file: a download or copy cut short? Fetch it "
     "again, or point this field at person_keypoints_*.json"),
    ("cut.json", COCO, "data.coco_train.ann_file",
     "is not JSON, so not a COCO person-keypoints file: a download or copy cut short?"),
    ("image", MPII, "data.mpii_train.ann_file", "is not JSON, so not an MPII annotation list"),
    ("other.json", COCO, "data.coco_val.unified_ann_file",
     "is JSON of no known annotation format, not a COCO person-keypoints file: point this "
     "field at person_keypoints_*.json"),
    ("empty_list.json", COCO, "data.coco_train.ann_file",
     "is an empty JSON list, not a COCO person-keypoints file"),
    # AI Challenger's raw list where a COCO file belongs, and other files in the new fields
    ("aic_list.json", COCO, "data.coco_train.ann_file",
     "looks like an AI Challenger annotation list (a JSON list of {image_id, "
     "keypoint_annotations, human_annotations}), not a COCO person-keypoints file: give it "
     "as data.aic_train.ann_file, or point this field at person_keypoints_*.json"),
    ("aic_list.json", MPII, "data.mpii_val.ann_file",
     "not an MPII annotation list (MMPose's mpii_*.json): give it as data.aic_val.ann_file"),
    ("aic_list.json", CROWDPOSE, "data.crowdpose_val.ann_file",
     "not a CrowdPose annotation file (MMPose's COCO-style mmpose_crowdpose_*.json): give it "
     "as data.aic_val.ann_file, or point this field at MMPose's mmpose_crowdpose_*.json"),
    ("aic_list.json", HALPE26, "data.halpe26_train.ann_file",
     "not a Halpe annotation file (COCO-style halpe_*_v1.json): give it as "
     "data.aic_train.ann_file, or point this field at Halpe's halpe_*_v1.json"),
    ("mpii", AIC, "data.aic_train.ann_file",
     "looks like an MPII annotation list (MMPose's mpii_*.json), not an AIC annotation file "
     "(MMPose's COCO-style aic_*.json or AI Challenger's keypoint_*_annotations_*.json): give "
     "it as data.mpii_train.ann_file, or point this field at MMPose's aic_*.json or AI "
     "Challenger's keypoint_*_annotations_*.json"),
    ("dets", CROWDPOSE, "data.crowdpose_val.ann_file", "give it as data.coco_val.bbox_file"),
    ("mat", HALPE26, "data.halpe26_val.ann_file",
     "if it is mpii_gt_val.mat (head boxes), give it as data.mpii_val.headbox_file"),
])
def test_a_file_in_the_wrong_format_says_what_it_looks_like(files, name, expected, field, says):
    with pytest.raises(AnnotationFormatError) as error:
        check_annotation_format(files[name], expected, field)
    message = str(error.value)
    assert message.startswith(f"{field} = {files[name]} ")
    assert says in message
    assert "\n" not in message
    assert isinstance(error.value, InputError) and isinstance(error.value, AnnotationError)


def test_a_file_in_the_right_format_passes(files):
    check_annotation_format(files["coco"], COCO, "data.coco_val.ann_file")
    check_annotation_format(files["dets"], COCO_RESULTS, "data.coco_val.bbox_file")
    check_annotation_format(files["mpii"], MPII, "data.mpii_val.ann_file")
    check_annotation_format(files["mat"], MPII_MAT, "data.mpii_val.headbox_file")
    check_annotation_format(files["empty_list.json"], MPII, "data.mpii_val.ann_file")
    check_annotation_format(files["empty_list.json"], COCO_RESULTS, "data.coco_val.bbox_file")
    # AIC, CrowdPose and Halpe are held as COCO-style files; AIC's raw list is AIC's too.
    for kind in (AIC, CROWDPOSE, HALPE26):
        check_annotation_format(files["coco"], kind, f"data.{kind}_train.ann_file")
    check_annotation_format(files["aic_list.json"], AIC, "data.aic_train.ann_file")
    check_annotation_format(files["empty_list.json"], AIC, "data.aic_val.ann_file")


def test_outside_the_config_the_message_names_where_it_belongs_by_pattern(files, tmp_path):
    with pytest.raises(InputError, match=r"--coco-ann = .* give it as data\.mpii_\*\.ann_file"):
        check_annotation_format(files["mpii"], COCO, "--coco-ann")
    with pytest.raises(InputError, match="data.coco_train.ann_file = .*missing.json does not "
                                         r"exist; point it at person_keypoints_\*\.json"):
        check_annotation_format(tmp_path / "missing.json", COCO, "data.coco_train.ann_file")
    with pytest.raises(InputError, match="is a folder"):
        check_annotation_format(tmp_path, MPII, "data.mpii_train.ann_file")
    with pytest.raises(ValueError, match="unknown annotation format 'yolo'"):
        check_annotation_format(files["coco"], "yolo", "data.coco_train.ann_file")


def test_a_job_prints_the_mistake_as_one_line_and_exits_2(files, capsys):
    @entry
    def main(argv):
        check_annotation_format(files["mpii"], COCO, "data.coco_train.ann_file")

    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: data.coco_train.ann_file = " in err
    assert issubclass(AnnotationFormatError, UsageError)


def test_formats_imports_nothing_heavy():
    code = ("import unipose_ray.data.formats, sys; "
            "print(sorted(m for m in ('numpy','torch','cv2','pyarrow','scipy','PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
