import numpy as np
import pytest

from unipose_ray.skeleton import (
    AIC,
    COCO,
    KEYPOINT_SETS,
    MPII,
    NAME_MAPS,
    UNANNOTATED,
    UNIFIED,
    KeypointSet,
    build_mapping,
    mapping_for,
)


def test_unified_order_is_coco_then_spine_and_head():
    assert UNIFIED.names[:17] == COCO.names
    assert UNIFIED.names[17:] == ("pelvis", "thorax", "upper_neck", "head_top")
    assert UNIFIED.flip_pairs == tuple((i, i + 1) for i in range(1, 17, 2))


@pytest.mark.parametrize("dataset", sorted(KEYPOINT_SETS))
def test_mapping_round_trips(dataset):
    mapping = mapping_for(dataset)
    k = mapping.source.num_keypoints
    values = np.random.default_rng(0).random((3, k, 2))
    unified = mapping.keypoints_to_unified(values, fill=np.nan)
    assert unified.shape == (3, UNIFIED.num_keypoints, 2)
    np.testing.assert_array_equal(mapping.keypoints_from_unified(unified), values)
    # Exactly the unannotated unified slots are left at the fill value.
    np.testing.assert_array_equal(np.isnan(unified[0, :, 0]), ~mapping.annotated)
    # Both index maps agree.
    for src, uni in enumerate(mapping.to_unified):
        assert mapping.from_unified[uni] == src
        assert UNIFIED.names[uni] == NAME_MAPS[dataset][mapping.source.names[src]]


def test_mpii_mapping_matches_the_papers_table():
    # MPII index -> unified index, as the paper authors' code maps them
    expected = [16, 14, 12, 11, 13, 15, 17, 18, 19, 20, 10, 8, 6, 5, 7, 9]
    np.testing.assert_array_equal(mapping_for("mpii").to_unified, expected)
    assert not mapping_for("mpii").annotated[:5].any()
    assert not mapping_for("coco").annotated[17:].any()


@pytest.mark.parametrize("keypoint_set", [COCO, MPII, AIC, UNIFIED])
def test_flip_pairs_mirror_left_and_right(keypoint_set):
    perm = keypoint_set.flip_permutation
    np.testing.assert_array_equal(perm[perm], np.arange(keypoint_set.num_keypoints))
    for i, j in enumerate(perm):
        a, b = keypoint_set.names[i], keypoint_set.names[j]
        assert a.replace("left", "right") == b or a.replace("right", "left") == b


def test_flip_pairs_survive_the_mapping():
    """A flip in a dataset's order equals a flip in unified order (the maps commute)."""
    for dataset in ("mpii", "aic"):
        mapping = mapping_for(dataset)
        values = np.arange(mapping.source.num_keypoints, dtype=float)
        flipped_then_mapped = mapping.keypoints_to_unified(values[mapping.source.flip_permutation], fill=-1)
        mapped_then_flipped = mapping.keypoints_to_unified(values, fill=-1)[UNIFIED.flip_permutation]
        np.testing.assert_array_equal(flipped_then_mapped, mapped_then_flipped)


def test_a_new_dataset_joins_through_a_name_table_only():
    """AI Challenger: 12 limbs, head top and neck; no face, no pelvis, no thorax."""
    mapping = build_mapping(AIC, NAME_MAPS["aic"])
    annotated = {UNIFIED.names[i] for i in np.flatnonzero(mapping.annotated)}
    assert annotated == set(AIC.names) - {"neck"} | {"upper_neck"}
    assert mapping.from_unified[UNIFIED.index("pelvis")] == UNANNOTATED
    assert mapping.from_unified[UNIFIED.index("upper_neck")] == AIC.index("neck")


def test_bad_name_tables_are_explained():
    with pytest.raises(ValueError, match="no entry for"):
        build_mapping(AIC, {"head_top": "head_top"})
    with pytest.raises(ValueError, match="does not have"):
        build_mapping(AIC, {**NAME_MAPS["aic"], "neck": "chin"})
    with pytest.raises(ValueError, match="same unified joint"):
        build_mapping(AIC, {**NAME_MAPS["aic"], "neck": "head_top"})
    with pytest.raises(KeyError, match="registered keypoint sets"):
        mapping_for("crowdpose")
    with pytest.raises(ValueError, match="sigmas"):
        KeypointSet("x", ("a", "b"), (), (0.1,), ())


def test_dataset_meta_is_mmpose_shaped():
    meta = UNIFIED.dataset_meta()
    assert meta["num_keypoints"] == 21
    assert meta["flip_indices"] == UNIFIED.flip_permutation.tolist()
    assert len(meta["sigmas"]) == 21
    assert set(meta["upper_body_ids"]) | set(meta["lower_body_ids"]) == set(range(21))
