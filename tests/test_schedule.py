"""The static HPCM schedule: step map, partitions, gathers/scatters, packing, s2-hyper quirk (§4.2-§4.6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hpcm.models import schedule as S

# §4.3 eight-part table, written out as in the spec (the module derives it from the rule)
L_TABLE = [
    [0, 2, 4, 6, 1, 3, 5, 7],
    [1, 3, 5, 7, 0, 2, 4, 6],
    [2, 4, 6, 0, 3, 5, 7, 1],
    [3, 5, 7, 1, 2, 4, 6, 0],
    [4, 6, 0, 2, 5, 7, 1, 3],
    [5, 7, 1, 3, 4, 6, 0, 2],
    [6, 0, 2, 4, 7, 1, 3, 5],
    [7, 1, 3, 5, 6, 0, 2, 4],
]
# §4.3 step map, group 0 and group 5 (rows 0..7 of y mod 8)
STEP_MAP_G0 = [
    [1, 8, 5, 9, 2, 8, 5, 9],
    [10, 6, 11, 7, 10, 6, 11, 7],
    [4, 9, 3, 8, 4, 9, 3, 8],
    [11, 7, 10, 6, 11, 7, 10, 6],
    [2, 8, 5, 9, 1, 8, 5, 9],
    [10, 6, 11, 7, 10, 6, 11, 7],
    [4, 9, 3, 8, 4, 9, 3, 8],
    [11, 7, 10, 6, 11, 7, 10, 6],
]
STEP_MAP_G5 = [
    [11, 7, 10, 6, 11, 7, 10, 6],
    [9, 4, 8, 3, 9, 4, 8, 3],
    [10, 6, 11, 7, 10, 6, 11, 7],
    [8, 2, 9, 5, 8, 1, 9, 5],
    [11, 7, 10, 6, 11, 7, 10, 6],
    [9, 4, 8, 3, 9, 4, 8, 3],
    [10, 6, 11, 7, 10, 6, 11, 7],
    [8, 1, 9, 5, 8, 2, 9, 5],
]
S1_POSITIONS = [(0, 0), (1, 1), (0, 3), (1, 2), (2, 0), (3, 1), (2, 3), (3, 2)]


def test_eight_part_table_matches_spec():
    assert [list(r) for r in S.EIGHT_PART] == L_TABLE


def test_step_table():
    assert [s.index for s in S.STEPS] == list(range(1, 12))
    assert [s.scale for s in S.STEPS] == [1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3]
    assert [s.mask for s in S.STEPS] == [0, 1, 1, 2, 3, 2, 3, 4, 5, 6, 7]
    # the official "i - 1" adaptor index wraps to the last element of the list
    assert [s.adaptor for s in S.STEPS] == [None, 0, 2, 0, 1, 5, 0, 1, 2, 3, 4]
    assert [s.param for s in S.STEPS] == [None, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [s.chunks for s in S.STEPS] == [2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8]
    assert [s.index for s in S.STEPS if s.starts_scale] == [1, 3, 6]


@pytest.mark.parametrize("m,h,w", [(320, 16, 16), (64, 8, 24), (16, 12, 20), (8, 4, 4)])
def test_step_map_partitions_y(m, h, w):
    sm = S.step_map(m, h, w)
    assert sm.shape == (m, h, w)
    assert int(sm.min()) == 1 and int(sm.max()) == 11  # every element coded, by exactly one step
    counts = [int((sm == k).sum()) for k in range(1, 12)]
    n = m * h * w
    assert counts == [n // 32] * 2 + [n // 16] * 3 + [n // 8] * 6
    g = m // 8
    for k in range(8):  # constant inside a channel group
        assert torch.equal(sm[k * g : (k + 1) * g], sm[k * g].expand(g, h, w))


def test_step_map_matches_spec_table(shared_dir):
    sm = S.step_map(320, 16, 16)
    assert sm[0, :8, :8].tolist() == STEP_MAP_G0
    assert sm[5 * 40, :8, :8].tolist() == STEP_MAP_G5
    assert torch.equal(sm[:, 8:, :], sm[:, :8, :]) and torch.equal(sm[:, :, 8:], sm[:, :, :8])
    path = shared_dir / "spec" / "hpcm_reference_vectors.json"
    if path.exists():
        ref = json.loads(path.read_text())["sets"][0]["results"]["kodim23_crop_256x256"]["float64"]
        for g, tile in enumerate(ref["step_map_tile_8x8_per_group"]):
            assert sm[40 * g, :8, :8].tolist() == tile


def test_s1_positions_and_gathers():
    m, h, w = 16, 8, 12
    y = torch.arange(m * h * w, dtype=torch.float64).view(1, m, h, w)
    s1 = S.gather_y_to_s1(y)
    g = m // 8
    for k, (r, c) in enumerate(S1_POSITIONS):
        assert torch.equal(s1[:, k * g : (k + 1) * g], y[:, k * g : (k + 1) * g, r::4, c::4])
    # scatter is the exact inverse of gather
    s2 = S.gather_y_to_s2(y)
    assert torch.equal(S.gather_y_to_s2(S.scatter_s2_to_y(s2)), s2)
    assert torch.equal(S.gather_s2_to_s1(S.scatter_s1_to_s2(s1)), s1)
    back = S.scatter_s2_to_y(s2)
    assert int((back != 0).sum()) == m * h * w // 4 - 1  # element 0 is zero-valued


def test_step_1_codes_s1_checkerboard_and_s2_mask0_is_s1():
    m, h, w = 16, 8, 8
    s1_step = S.STEPS[0]
    mask = S.step_mask_bool(s1_step, m, h // 4, w // 4)
    rr, cc = np.meshgrid(np.arange(h // 4), np.arange(w // 4), indexing="ij")
    even = (rr + cc) % 2 == 0
    assert (mask[: m // 2] == even).all() and (mask[m // 2 :] == ~even).all()
    # s2 four-part mask 0 = the s1 positions; s3 masks 0 + 1 = the s2 lattice
    s2_mask0 = S._mask_np(2, 0, m, h // 2, w // 2)
    ones = torch.ones(1, m, h // 4, w // 4)
    assert np.array_equal(s2_mask0, S.scatter_s1_to_s2(ones)[0].numpy() > 0)
    s3_01 = S._mask_np(3, 0, m, h, w) | S._mask_np(3, 1, m, h, w)
    assert np.array_equal(s3_01, S.scatter_s2_to_y(torch.ones(1, m, h // 2, w // 2))[0].numpy() > 0)


@pytest.mark.parametrize("step", S.STEPS, ids=lambda s: f"step{s.index}")
def test_packing_one_chunk_per_position(step):
    m, h, w = 32, 8, 8
    gh, gw = S.grid_shape(step.scale, h, w)
    mask = S.step_mask(step, m, gh, gw, dtype=torch.float64)
    packed = S.pack_channels(mask, step.chunks)
    assert packed.shape == (1, m // step.chunks, gh, gw)
    assert torch.equal(packed, torch.ones_like(packed))
    vals = torch.randn(1, m, gh, gw, dtype=torch.float64)
    restored = S.unpack_channels(S.pack_channels(vals * mask, step.chunks), step.chunks) * mask
    assert torch.equal(restored, vals * mask)


def _official_s2_hyper(x: torch.Tensor) -> torch.Tensor:
    """Brute-force boolean-mask version of §4.6 over the whole (B, C, H, W) tensor."""
    b, m, h, w = x.shape
    g = m // 8
    pair = {
        0: [(0, 0), (2, 2)], 1: [(0, 2), (2, 0)], 2: [(1, 1), (3, 3)], 3: [(1, 3), (3, 1)],
        4: [(0, 1), (2, 3)], 5: [(0, 3), (2, 1)], 6: [(1, 0), (3, 2)], 7: [(1, 2), (3, 0)],
    }  # fmt: skip
    a, bb = [0, 2, 4, 6, 1, 3, 5, 7], [1, 3, 5, 7, 0, 2, 4, 6]
    q_pos = [(0, 0), (0, 2), (1, 1), (1, 3), (0, 1), (0, 3), (1, 0), (1, 2)]
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    src = torch.zeros(b, m, h, w, dtype=torch.bool)
    tgt = torch.ones(b, m, h // 2, w // 2, dtype=torch.bool)
    for k in range(8):
        tile = torch.zeros(4, 4, dtype=torch.bool)
        for r, c in pair[a[k]] + pair[bb[k]]:
            tile[r, c] = True
        r, c = q_pos[order[k]]
        tile[r, c] = False
        src[:, k * g : (k + 1) * g] = tile.repeat(h // 4, w // 4)
        q = k // 2
        unit = torch.ones(2, 2, dtype=torch.bool)
        unit[q // 2, q % 2] = False
        tgt[:, k * g : (k + 1) * g] = unit.repeat(h // 4, w // 4)
    out = torch.zeros(b, m, h // 2, w // 2, dtype=x.dtype)
    return out.masked_scatter(tgt, torch.masked_select(x, src))


@pytest.mark.parametrize("b,m,h,w", [(1, 8, 16, 16), (2, 16, 8, 24), (1, 8, 12, 20)])
def test_s2_hyper_matches_raster_copy(b, m, h, w):
    x = torch.randn(b, m, h, w, dtype=torch.float64)
    assert torch.equal(S.s2_hyper(x), _official_s2_hyper(x))


def test_s2_hyper_quirk_examples():
    m, h, w = 8, 16, 16
    col = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w).expand(1, m, h, w).contiguous()
    out = S.s2_hyper(col)
    # spec example: group 4, first s2 row (y columns 0, 2, 4, 6) gets the hyper of columns 0, 4, 8, 12
    assert out[0, 4, 0, :4].tolist() == [0, 4, 8, 12]
    # groups 0 and 1 are aligned: target at s2 column j holds y column 2j + offset
    assert out[0, 0, 1, :].tolist() == [2 * j for j in range(8)]
    # group 2, rows with s1 positions: the value comes from 2 columns to the right
    assert out[0, 2, 0, 0].item() == 1 + 2  # s2 col 0 of group 2 is y col 1, fed from y col 3
    # s1 positions of the s2 grid stay zero
    ones = S.s2_hyper(torch.ones(1, m, h, w))
    s1_on_s2 = S.scatter_s1_to_s2(torch.ones(1, m, h // 4, w // 4))
    assert torch.equal(ones, 1 - s1_on_s2)


def test_s3_hyper_is_complement_of_s2_lattice():
    m, h, w = 16, 8, 8
    x = torch.randn(1, m, h, w)
    lattice = S.scatter_s2_to_y(torch.ones(1, m, h // 2, w // 2))
    assert torch.equal(S.s3_hyper(x), x * (1 - lattice))
