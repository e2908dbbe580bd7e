from dataclasses import replace

import numpy as np
import pytest

from unipose_ray.data.geometry import apply_affine, invert_affine
from unipose_ray.data.pipeline import PipelineConfig, TopdownDataset, collate, load_image
from unipose_ray.data.readers import read_coco, read_mpii
from unipose_ray.data.transforms import (
    AugmentConfig,
    CodecConfig,
    CropParams,
    crop_image,
    crop_relation,
    simcc_targets,
    transform_keypoints,
    warp_matrix,
)
from unipose_ray.models.compat import import_mmpose
from unipose_ray.skeleton import UNIFIED


@pytest.fixture(scope="module")
def dataset(real_samples):
    records = read_coco(real_samples / "coco" / "test_coco.json", real_samples / "coco")
    records += read_mpii(real_samples / "mpii" / "test_mpii.json", real_samples / "mpii")
    return TopdownDataset(records, PipelineConfig(seed=7))


def _all_params(dataset, epochs=3):
    return [(i, dataset.params(i, e)) for i in range(len(dataset)) for e in range(epochs)]


def test_replay_from_stored_params_is_identical(dataset):
    for index, params in _all_params(dataset)[::5]:
        original = dataset.sample(index, epoch=0)
        stored = CropParams.from_dict(original.params.to_dict())  # e.g. via Parquet/JSON
        replayed = dataset.replay(index, stored)
        np.testing.assert_array_equal(replayed.image, original.image)
        np.testing.assert_array_equal(replayed.target_x, original.target_x)
        np.testing.assert_array_equal(replayed.weights, original.weights)


def test_params_depend_only_on_seed_epoch_and_instance(dataset):
    again = TopdownDataset(list(reversed(dataset.records)), dataset.config)
    n = len(dataset)
    for i in range(n):
        assert again.params(n - 1 - i, epoch=2) == dataset.params(i, epoch=2)
    assert dataset.params(0, epoch=0) != dataset.params(0, epoch=1)
    other_seed = TopdownDataset(dataset.records, replace(dataset.config, seed=8))
    assert other_seed.params(0, epoch=0) != dataset.params(0, epoch=0)


def test_augmentations_are_all_exercised(dataset):
    params = [p for _, p in _all_params(dataset, epochs=6)]
    assert any(p.flip for p in params) and not all(p.flip for p in params)
    assert any(p.rotation != 0 for p in params)
    assert any(any(p.hsv) for p in params)
    assert all(p.input_size == (192, 256) for p in params)
    # Boxes are aspect-fixed to the input size.
    np.testing.assert_allclose([p.scale[0] / p.scale[1] for p in params], 192 / 256)


def test_crop_then_inverse_recovers_keypoints(dataset):
    for index, params in _all_params(dataset):
        record = dataset.records[index]
        keypoints, _, _ = transform_keypoints(record, params)
        if params.flip:  # undo the label swap before going back to the image
            keypoints = keypoints[UNIFIED.flip_permutation]
        back = apply_affine(keypoints.astype(np.float64), invert_affine(warp_matrix(params)))
        annotated = record.annotated
        np.testing.assert_allclose(back[annotated], record.keypoints[annotated], atol=1e-3)


def test_flip_of_flipped_is_identity(dataset):
    index, params = _all_params(dataset)[3]
    unflipped, flipped = replace(params, flip=False), replace(params, flip=True)
    record = dataset.records[index]
    kp, vis, ann = transform_keypoints(record, unflipped)
    kp_f, vis_f, ann_f = transform_keypoints(record, flipped)
    # Mirror the flipped sample back: x -> w - x (MMPose's crop centre is w / 2) and swap
    # the labels again.
    w = params.input_size[0]
    kp_ff = kp_f[UNIFIED.flip_permutation].copy()
    kp_ff[:, 0] = w - kp_ff[:, 0]
    np.testing.assert_allclose(kp_ff, kp, atol=1e-4)
    np.testing.assert_array_equal(vis_f[UNIFIED.flip_permutation], vis)
    np.testing.assert_array_equal(ann_f[UNIFIED.flip_permutation], ann)
    # The image is the column mirror about x = w / 2: column j shows what column w - j did
    # (up to OpenCV's 1/32-pixel interpolation grid).
    image = load_image(record.image_path)
    plain = replace(unflipped, hsv=(0, 0, 0), dropout=(0, 0, 0, 0), blur=0)
    a = crop_image(image, plain).astype(float)
    b = crop_image(image, replace(plain, flip=True))[:, ::-1].astype(float)
    assert np.abs(a[:, 1:] - b[:, :-1]).mean() < 1.0


def test_teacher_crop_relation_is_exact(dataset):
    for index, params in _all_params(dataset)[::4]:
        view = dataset.teacher_view(index, params, (256, 256))
        record = dataset.records[index]
        student_kp, _, _ = transform_keypoints(record, params)
        teacher_kp, _, _ = transform_keypoints(record, view.params)
        np.testing.assert_allclose(teacher_kp, view.a * student_kp + view.b, atol=1e-3)
        assert view.image.shape == (3, 256, 256)
        # The teacher's box is MMPose's own crop of the person box at its aspect ratio:
        # it holds the person box, and is the student's box where that box is tall.
        box = np.asarray(params.box)
        np.testing.assert_allclose(view.params.scale, [box.max(), box.max()], rtol=1e-6)
        if box[0] / box[1] <= 192 / 256:
            np.testing.assert_allclose(view.params.scale, [params.scale[1]] * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="same box"):
        crop_relation(params, replace(view.params, rotation=params.rotation + 1))


def test_simcc_targets_equal_mmpose_simcc_label():
    import_mmpose()
    from mmpose.codecs import SimCCLabel

    codec = CodecConfig()
    mm = SimCCLabel(input_size=codec.input_size, sigma=codec.sigma, simcc_split_ratio=2.0,
                    smoothing_type="gaussian", normalize=False)
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(-40, 280, (21, 2)).astype(np.float32)
    visible = (rng.random(21) > 0.3).astype(np.float32)
    ours_x, ours_y, ours_w = simcc_targets(keypoints, visible, codec)
    ref = mm.encode(keypoints[None], visible[None])
    np.testing.assert_allclose(ours_x, ref["keypoint_x_labels"][0], atol=1e-6)
    np.testing.assert_allclose(ours_y, ref["keypoint_y_labels"][0], atol=1e-6)
    np.testing.assert_array_equal(ours_w, ref["keypoint_weights"][0])


def test_weights_are_visibility_times_annotated(dataset):
    mpii_index = next(i for i, r in enumerate(dataset.records) if r.dataset == "mpii")
    sample = TopdownDataset(dataset.records, PipelineConfig(augment=AugmentConfig.none())).sample(mpii_index)
    assert not sample.weights[:5].any()  # MPII has no face joints
    assert sample.weights[17:].all()     # but the spine and head are labelled and visible


def test_collate_stacks_samples_into_a_batch(dataset):
    samples = [dataset.sample(i, 1) for i in range(4)]
    batch = collate(samples)
    assert batch["images"].shape == (4, 3, 256, 192) and batch["images"].dtype == np.uint8
    assert batch["target_x"].shape == (4, 21, 384) and batch["target_y"].shape == (4, 21, 512)
    np.testing.assert_array_equal(batch["keypoints"][2], samples[2].keypoints)
    np.testing.assert_allclose(batch["inverse_warp"][0] @ np.vstack([batch["warp"][0], [0, 0, 1]]),
                               np.eye(3)[:2], atol=1e-3)


def test_unaugmented_teacher_crop_is_the_teachers_own_crop(dataset):
    """Without augmentation a teacher sees exactly what MMPose's pipeline would give it at
    its input size (wide people included), not the student's crop grown to its aspect."""
    plain = PipelineConfig(augment=AugmentConfig.none())
    student = TopdownDataset(dataset.records, plain)
    teacher = TopdownDataset(dataset.records, replace(plain, codec=CodecConfig((256, 256))))
    wide = 0
    for i, record in enumerate(dataset.records):
        view = student.teacher_view(i, student.params(i), (256, 256))
        np.testing.assert_array_equal(view.image, teacher.sample(i).image)
        wide += record.bbox[2] > record.bbox[3] * 192 / 256
    assert wide >= 3  # the real samples have people wider than the student's 3:4


def test_half_body_teacher_crop_is_the_teachers_own_crop_of_the_half_body(dataset):
    """The half body's box is kept before any aspect fix (MMPose's RandomHalfBody), so the
    teacher fixes it to its own aspect ratio, not the student's crop grown."""
    half = TopdownDataset(dataset.records, replace(dataset.config, augment=replace(
        AugmentConfig.none(), half_body_prob=1.0)))
    checked = 0
    for i in range(len(half)):
        params = half.params(i)
        box = np.asarray(params.box)
        if np.allclose(box[0] / box[1], 192 / 256):
            continue
        checked += 1
        view = half.teacher_view(i, params, (256, 256))
        np.testing.assert_allclose(view.params.scale, [box.max()] * 2, rtol=1e-6)
    assert checked >= 3


def test_dropout_hole_stays_inside_a_shorter_teacher_crop():
    """A wide person's square teacher crop is shorter than the student's 3:4 crop: a hole at
    the student crop's top edge starts above it and must be clipped, not wrapped."""
    params = CropParams(center=(100.0, 100.0), scale=(90.0, 120.0), box=(90.0, 90.0),
                        dropout=(40, 0, 60, 60))
    teacher = params.at_input_size((256, 256))
    x, y, w, h = teacher.dropout
    assert x >= 0 and y == 0 and x + w <= 256 and 0 < h < 80
    a, b = crop_relation(params, teacher)
    np.testing.assert_allclose(h, 60 * a[1] + b[1], atol=1)  # the hole's bottom edge is kept
