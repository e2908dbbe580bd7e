"""The teacher-logit cache's basis format: per-joint PCA coefficients of teacher-grid logits,
decoded onto the student's grid as an online teacher's logits are mapped."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from unipose_ray.kd.basis import Basis, fit_basis
from unipose_ray.kd.grid import map_teacher_logits
from unipose_ray.kd.losses import simcc_kd_loss
from unipose_ray.teacher_cache.format import rows_to_table, shard_schema, table_columns

TEACHER_BINS = (192, 256)  # a 96x128 teacher, split ratio 2
STUDENT_BINS = (128, 192)  # a 64x96 student
COMPRESSION = {"components": 6, "calibration": 64, "k": None, "shard_records": 8}


def head_like_logits(n: int, joints: int = 3, rank: int = 6, seed: int = 0):
    """Logits as an RTMPose head makes them: a fixed linear map of a low-dimensional
    per-joint feature, so ``rank`` directions span every joint's x and y logits."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(joints, sum(TEACHER_BINS), rank, generator=g)
    features = torch.randn(n, joints, rank, generator=g) * torch.linspace(3, 0.5, rank)
    logits = torch.einsum("kdr,nkr->nkd", weights, features) + 5
    return logits.split(TEACHER_BINS, dim=-1)


def crop_relations(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    a = 1.5 + 0.1 * torch.rand(n, 2, generator=g)  # teacher px per student px
    b = 4 * torch.randn(n, 2, generator=g)
    return a, b


def test_a_basis_spanning_the_logits_decodes_the_mapped_teacher_logits():
    x, y = head_like_logits(40)
    basis = fit_basis(x, y, 6, split_ratio=2.0)
    a, b = crop_relations(40)
    coef = basis.encode(x, y)
    assert coef.dtype == torch.float16 and coef.shape == (40, 3, 6)
    got = basis.decode(coef, a, b, STUDENT_BINS, 2.0)
    want = map_teacher_logits(x, y, a, b, student_bins=STUDENT_BINS, split_ratio=2.0)
    # the only loss is the fp16 rounding of the coefficients: |dc| <= |c| 2^-11 each
    bound = torch.einsum("bkm,kmd->bkd", coef.float().abs() * 2.0 ** -11,
                         basis.components.abs()).amax() + 1e-3
    for g_axis, w_axis in zip(got, want, strict=True):
        assert g_axis.shape == w_axis.shape
        inside = w_axis > -1e3  # bins the teacher crop covers (the rest are -1e4 below)
        assert (g_axis[inside] - w_axis[inside]).abs().max() <= bound
        assert torch.equal(inside, g_axis > -1e3)
    student = [torch.randn(40, 3, n, generator=torch.Generator().manual_seed(2))
               for n in STUDENT_BINS]
    torch.testing.assert_close(simcc_kd_loss(*student, *got), simcc_kd_loss(*student, *want),
                               rtol=1e-3, atol=0)


def test_fewer_components_than_the_logits_span_lose_the_smallest_directions():
    x, y = head_like_logits(200)
    data = torch.cat([x, y], -1)
    errors = []
    for m in (2, 4, 6):
        basis = fit_basis(x[:100], y[:100], m, split_ratio=2.0)
        decoded = basis.mean + torch.einsum("bkm,kmd->bkd", basis.encode(x[100:], y[100:])
                                            .float(), basis.components)
        errors.append(float((decoded - data[100:]).norm() / (data[100:] - basis.mean).norm()))
    # held-out samples: the error shrinks with every pair of directions, to fp16 rounding
    assert errors[0] > errors[1] > 10 * errors[2]
    assert errors[2] < 1e-3


def test_a_basis_survives_its_file_and_shards_hold_its_coefficients():
    x, y = head_like_logits(40)
    basis = fit_basis(x, y, 6, split_ratio=2.0)
    again = Basis.from_bytes(basis.to_bytes())
    assert torch.equal(again.components, basis.components) and torch.equal(again.mean, basis.mean)
    assert (again.bins, again.split_ratio) == (basis.bins, basis.split_ratio)

    a, b = crop_relations(40)
    rows = {"record": np.arange(40), "view": np.zeros(40, np.int16),
            "coco_coef": basis.encode(x, y).numpy(), "coco_a": a.numpy(), "coco_b": b.numpy()}
    table = rows_to_table(rows, ["coco"], COMPRESSION)
    assert table.schema.equals(shard_schema(COMPRESSION))
    assert table.column("coef").type == pa.list_(pa.float16())
    arrays = table_columns(table, 3, COMPRESSION)
    assert np.array_equal(arrays["coef"], rows["coco_coef"])
    assert np.array_equal(arrays["a"], rows["coco_a"]) and arrays["b"].shape == (40, 2)


def test_a_basis_needs_as_many_samples_as_components():
    x, y = head_like_logits(5)
    with pytest.raises(ValueError, match="needs at least 6 calibration samples"):
        fit_basis(x, y, 6, split_ratio=2.0)
    basis = fit_basis(x, y, 5, split_ratio=2.0)
    with pytest.raises(ValueError, match="bins"):
        basis.encode(y, x)
