"""Tests of hpcm.entropy: GGM likelihood, CDF tables, index rule and the constriction symbol coder."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from hpcm.entropy.coder import SymbolDecoder, SymbolEncoder, estimate_bits
from hpcm.entropy.ggm import GGM, LowerBound, ggm_cdf, ggm_likelihood
from hpcm.entropy.tables import (
    CdfTable,
    build_ggm_cdf_table,
    get_scale_table,
    ggm_tail_multiplier,
    quantize_pmf,
    scale_to_index,
)
from hpcm.errors import FormatError

BETA = 1.5


@pytest.fixture(scope="module")
def scale_table() -> torch.Tensor:
    return get_scale_table(0.12, 64, 60)


@pytest.fixture(scope="module")
def y_table(scale_table: torch.Tensor) -> CdfTable:
    return build_ggm_cdf_table(scale_table)


def _naive_likelihood(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The official expression F(v+½) − F(v−½) with F = ½(1 + sign·P), no reflection."""

    def cdf(u: torch.Tensor) -> torch.Tensor:
        a = torch.full_like(u, 1.0 / BETA)
        return 0.5 * (1 + torch.sign(u) * torch.special.gammainc(a, u.abs() ** BETA))

    s = torch.clamp(s, min=float(np.float32(0.12)))  # the bound is a float32 buffer, as in the official code
    return cdf((v + 0.5) / s) - cdf((v - 0.5) / s)


# ----------------------------------------------------------------------------------------------- GGM


def test_cdf_matches_scipy_gennorm_float64() -> None:
    u = torch.linspace(-12.0, 12.0, 2001, dtype=torch.float64)
    ours = ggm_cdf(u, BETA).numpy()
    ref = stats.gennorm.cdf(u.numpy(), BETA)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)
    # Lower tail: relative accuracy (where the direct ½(1 − P) form would cancel).
    neg = u.numpy() < -1
    np.testing.assert_allclose(ours[neg], ref[neg], rtol=1e-12)
    assert ggm_cdf(torch.tensor([0.0], dtype=torch.float64)).item() == 0.5


def test_likelihood_matches_official_expression_float64() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4, 8, 6, 6, generator=g, dtype=torch.float64) * 6
    s = torch.rand(4, 8, 6, 6, generator=g, dtype=torch.float64) * 10
    ours = GGM().likelihood(v, s)
    ref = torch.clamp(_naive_likelihood(v, s), min=1e-9)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-15)


def test_likelihood_dtype_and_broadcast() -> None:
    model = GGM()
    v = torch.randn(2, 3, 4, 4)
    s = torch.rand(1, 3, 1, 1) + 0.5
    out = model.likelihood(v, s)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)
    out64 = model.likelihood(v.double(), s.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out.double(), out64, rtol=1e-5, atol=1e-7)
    assert float(out.min()) >= 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [0.12, 0.5, 3.0, 40.0])
@pytest.mark.parametrize("shift", [0.0, 0.37])
def test_likelihood_sums_to_one(dtype: torch.dtype, scale: float, shift: float) -> None:
    k = torch.arange(-2000, 2001, dtype=dtype) + shift
    lik = ggm_likelihood(k, torch.tensor(scale, dtype=dtype), BETA)
    assert float(lik.min()) >= 0
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert abs(float(lik.double().sum()) - 1.0) < tol


def test_likelihood_tail_is_accurate_in_float32() -> None:
    # 15σ out: the official form cancels to 0 in float32; ours keeps the relative accuracy.
    v = torch.tensor([30.0, -30.0])
    s = torch.tensor(2.0)
    ours = ggm_likelihood(v, s, BETA)
    ref = ggm_likelihood(v.double(), s.double(), BETA)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=0)
    assert float(ref[0]) > 0 and float(ref[0]) == float(ref[1])


def test_gradcheck_cdf_and_likelihood() -> None:
    g = torch.Generator().manual_seed(1)
    u = (torch.randn(20, generator=g, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ggm_cdf(x, BETA), (u,))
    v = (torch.randn(3, 5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    s = (torch.rand(3, 5, generator=g, dtype=torch.float64) * 4 + 0.3).requires_grad_()
    model = GGM()
    assert torch.autograd.gradcheck(model.likelihood, (v, s))


def test_cdf_backward_is_density_and_beta_gets_no_grad() -> None:
    u = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([BETA], dtype=torch.float64, requires_grad=True)
    ggm_cdf(u, beta).sum().backward()
    np.testing.assert_allclose(u.grad.numpy(), stats.gennorm.pdf(u.detach().numpy(), BETA), rtol=1e-12)
    assert beta.grad is None


def test_lower_bound_gradient() -> None:
    lb = LowerBound(0.5)
    x = torch.tensor([0.1, 0.1, 0.9, 0.9], requires_grad=True)
    y = lb(x)
    assert y.tolist() == pytest.approx([0.5, 0.5, 0.9, 0.9])
    # grads: below bound + positive grad → blocked; below + negative (pushes up) → passes; above → passes.
    y.backward(torch.tensor([1.0, -1.0, 1.0, -1.0]))
    assert x.grad.tolist() == [0.0, -1.0, 1.0, -1.0]
    assert lb.bound.shape == (1,) and lb.bound.dtype == torch.float32
    x64 = torch.tensor([0.2], dtype=torch.float64)
    assert lb(x64).dtype == torch.float64


def test_ggm_state_dict_keys() -> None:
    sd = GGM().state_dict()
    assert list(sd) == ["beta", "scale_lower_bound.bound", "likelihood_lower_bound.bound"]
    assert all(t.shape == (1,) for t in sd.values())
    assert float(sd["beta"]) == 1.5


def test_scale_bound_gradient_through_likelihood() -> None:
    s = torch.tensor([0.05, 1.0], requires_grad=True)
    rate = -GGM().likelihood(torch.tensor([0.0, 0.0]), s).log2().sum()
    rate.backward()
    # at v = 0 the rate grows with σ, so descent pushes σ down: blocked below the bound, passed above it.
    assert s.grad[0] == 0 and s.grad[1] > 0


# -------------------------------------------------------------------------------------------- tables


def test_scale_table(scale_table: torch.Tensor) -> None:
    assert scale_table.dtype == torch.float32 and scale_table.shape == (60,)
    ref = np.exp(np.linspace(math.log(0.12), math.log(64), 60))
    np.testing.assert_allclose(scale_table.numpy(), ref, rtol=1e-6)
    assert torch.all(scale_table[1:] > scale_table[:-1])


def test_official_y_table_shape(y_table: CdfTable) -> None:
    assert ggm_tail_multiplier(1e-6, BETA) == pytest.approx(5.4269, abs=1e-4)
    assert y_table.cdf.shape == (60, 699) and y_table.cdf.dtype == np.int32
    centers = -y_table.offset
    assert centers[0] == 1 and centers[-1] == 348 and np.all(np.diff(centers) >= 0)
    np.testing.assert_array_equal(y_table.cdf_length, 2 * centers + 3)
    assert int(y_table.cdf_length.max()) - 2 == 697
    for r in range(60):
        row = y_table.cdf[r, : y_table.cdf_length[r]]
        assert row[0] == 0 and row[-1] == 1 << 16 and np.all(np.diff(row) >= 1)


def test_table_close_to_ggm(y_table: CdfTable, scale_table: torch.Tensor) -> None:
    # The quantised pmf of a mid-range row is within 0.1% of the GGM's entropy (KL tiny).
    r = 30
    s = float(scale_table[r])
    c = int(-y_table.offset[r])
    k = torch.arange(-c, c + 1, dtype=torch.float64)
    p = ggm_likelihood(k, torch.tensor(s, dtype=torch.float64), BETA).numpy()
    q = y_table.freqs[r][:-1] / 65536.0
    cross = -(p * np.log2(q)).sum()
    ent = -(p * np.log2(p)).sum()
    assert ent <= cross < ent * 1.001


def test_z_table_one_row_per_channel() -> None:
    scales_hyper = torch.tensor([1.0, 0.01, 5.0, 20.0]).reshape(1, 4, 1, 1)
    tab = build_ggm_cdf_table(scales_hyper)
    assert tab.num_rows == 4
    assert (-tab.offset).tolist() == [6, 1, 28, 109]  # ceil(max(s, 0.12)·5.4269)


def test_table_rebuilt_from_buffers(y_table: CdfTable) -> None:
    bufs = y_table.as_tensors()
    again = CdfTable(bufs["cdf"].numpy(), bufs["cdf_length"].numpy(), bufs["offset"].numpy())
    assert again == y_table
    bad = y_table.cdf.copy()
    bad[3, 2] = bad[3, 1]  # a zero-frequency symbol
    with pytest.raises(ValueError):
        CdfTable(bad, y_table.cdf_length, y_table.offset)


def test_quantize_pmf() -> None:
    rng = np.random.default_rng(0)
    for pmf in [rng.random(700), np.r_[1.0, np.zeros(9)], np.r_[1e-30, 1.0, 1e-30], np.ones(65536)]:
        f = quantize_pmf(pmf, 16)
        assert f.sum() == 1 << 16 and f.min() >= 1 and f.shape == pmf.shape
    with pytest.raises(ValueError):
        quantize_pmf(np.ones(65537), 16)
    with pytest.raises(ValueError):
        quantize_pmf(np.array([0.5, np.nan]), 16)


def test_scale_to_index(scale_table: torch.Tensor) -> None:
    t = scale_table
    sigma = torch.tensor([-1.0, 0.0, 0.1, float(t[0]), float(t[1]), float(t[1]) * 1.0001, 63.9, 64.0, 1e9])
    idx = scale_to_index(sigma, t)
    assert idx.dtype == torch.int32
    assert idx.tolist() == [0, 0, 0, 0, 1, 2, 59, 59, 59]
    g = torch.Generator().manual_seed(0)
    rnd = torch.exp(torch.randn(2, 3, 8, 8, generator=g) * 2)
    brute = (t[:-1].reshape(1, 1, 1, 1, -1) < rnd.unsqueeze(-1)).sum(-1).to(torch.int32)
    assert torch.equal(scale_to_index(rnd, t), brute)
    # float64 σ is compared exactly with the float32 table values
    assert torch.equal(scale_to_index(rnd.double(), t), brute)
    assert scale_to_index(torch.tensor([float(t[5])], dtype=torch.float64), t).item() == 5


# --------------------------------------------------------------------------------------------- coder


def test_constriction_model_is_exactly_the_integer_table(y_table: CdfTable) -> None:
    # Row 0 (σ = 0.12) has frequencies [3, 65529, 3, 1]; the escape has probability exactly 2^-16, so
    # every extra copy must cost exactly 16 bits on the ANS stack; f = 3 costs 16 − log2 3 on average.
    assert y_table.freqs[0].tolist() == [3, 65529, 3, 1]
    model = y_table.models[0]
    n = 20000
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.array([2], np.int32), model)
    before = coder.num_bits()
    coder.encode_reverse(np.full(n, 3, np.int32), model)
    assert coder.num_bits() - before == 16 * n
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.array([2], np.int32), model)
    before = coder.num_bits()
    coder.encode_reverse(np.full(n, 0, np.int32), model)
    assert abs(coder.num_bits() - before - n * (16 - math.log2(3))) <= 64


def _random_calls(rng: np.random.Generator, table: CdfTable, scales: np.ndarray, shapes, extreme: bool):
    calls = []
    for shape in shapes:
        idx = rng.integers(0, table.num_rows, size=shape).astype(np.int32)
        sym = np.round(rng.laplace(size=shape) * scales[idx]).astype(np.int64)
        if extreme and sym.size >= 8:
            flat = sym.reshape(-1)
            pos = rng.choice(flat.size, 8, replace=False)
            flat[pos] = [2**31 - 1, -(2**31), 10**6, -(10**6), 349, -349, 2**16, -(2**20) - 3]
        calls.append((sym.astype(np.int32), idx))
    return calls


def _roundtrip(table: CdfTable, calls) -> bytes:
    enc = SymbolEncoder(table)
    for sym, idx in calls:
        enc.encode(sym, idx)
    data = enc.finish()
    dec = SymbolDecoder(table, data)
    for sym, idx in calls:
        out = dec.decode(idx)
        assert out.dtype == np.int32 and out.shape == sym.shape
        np.testing.assert_array_equal(out, sym)
    dec.finish()
    return data


def test_roundtrip_with_escapes_over_many_calls(y_table: CdfTable, scale_table: torch.Tensor) -> None:
    rng = np.random.default_rng(0)
    shapes = [(1, 8, 4, 4), (1, 4, 8, 8), (0,), (1, 16, 2, 2), (5,), (1, 2, 3, 3)] * 2
    calls = _random_calls(rng, y_table, scale_table.numpy(), shapes, extreme=True)
    data = _roundtrip(y_table, calls)
    est = sum(estimate_bits(s, i, y_table) for s, i in calls)
    assert 8 * len(data) - est < 100


def test_roundtrip_all_extremes_single_row() -> None:
    tab = build_ggm_cdf_table(torch.tensor([1.0]))
    vals = np.array(
        [0, 6, -6, 7, -7, 8, -8, 2**31 - 1, -(2**31), 2**31 - 2, -(2**31) + 1, 65535, 65536, -65536, 123457],
        dtype=np.int32,
    )
    _roundtrip(tab, [(vals, np.zeros_like(vals))])


def test_roundtrip_z_style_table() -> None:
    rng = np.random.default_rng(3)
    scales_hyper = torch.from_numpy(np.exp(rng.normal(size=(1, 16, 1, 1))).astype(np.float32))
    tab = build_ggm_cdf_table(scales_hyper)
    z = np.round(rng.laplace(size=(1, 16, 4, 4)) * scales_hyper.numpy() * 2).astype(np.int32)
    idx = np.broadcast_to(np.arange(16, dtype=np.int32).reshape(1, 16, 1, 1), z.shape).copy()
    _roundtrip(tab, [(z, idx)])


def test_payload_within_one_percent_of_estimate(y_table: CdfTable, scale_table: torch.Tensor) -> None:
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 60, size=30000).astype(np.int32)
    sigma = scale_table.numpy()[idx]
    sym = np.round(stats.gennorm.rvs(BETA, size=idx.size, random_state=rng) * sigma).astype(np.int32)
    sym = np.clip(sym, y_table.offset[idx], -y_table.offset[idx])  # in range only
    enc = SymbolEncoder(y_table)
    for part in np.array_split(np.arange(idx.size), 11):
        enc.encode(sym[part], idx[part])
    data = enc.finish()
    est = estimate_bits(sym, idx, y_table)
    assert est > 0
    assert abs(8 * len(data) - est) / est < 0.01
    # and the quantised model is close to the continuous GGM's ideal rate
    lik = GGM().likelihood(torch.from_numpy(sym).double(), torch.from_numpy(sigma).double())
    ideal = float(-torch.log2(lik).sum())
    assert abs(est - ideal) / ideal < 0.01


def test_encoder_input_validation(y_table: CdfTable) -> None:
    enc = SymbolEncoder(y_table)
    with pytest.raises(ValueError):
        enc.encode(np.zeros(3, np.int32), np.zeros(4, np.int32))
    with pytest.raises(ValueError):
        enc.encode(np.zeros(3, np.int32), np.full(3, 60, np.int32))
    with pytest.raises(TypeError):
        enc.encode(np.zeros(3, np.float32), np.zeros(3, np.int32))
    assert enc.finish() == b""
    with pytest.raises(RuntimeError):
        enc.finish()


def test_malformed_streams_raise_format_error(y_table: CdfTable) -> None:
    with pytest.raises(FormatError):
        SymbolDecoder(y_table, b"\x01\x02\x03")
    with pytest.raises(FormatError):
        SymbolDecoder(y_table, b"\x05\x00\x00\x00\x00\x00\x00\x00")  # zero final word
    enc = SymbolEncoder(y_table)
    enc.encode(np.arange(-20, 20, dtype=np.int32), np.full(40, 40, np.int32))
    data = enc.finish()
    dec = SymbolDecoder(y_table, data + data)  # trailing data
    dec.decode(np.full(40, 40, np.int32))
    with pytest.raises(FormatError):
        dec.finish()


@pytest.fixture(scope="module")
def fuzz_stream(y_table: CdfTable, scale_table: torch.Tensor):
    rng = np.random.default_rng(7)
    calls = _random_calls(rng, y_table, scale_table.numpy(), [(64,), (32,), (48,)], extreme=True)
    enc = SymbolEncoder(y_table)
    for sym, idx in calls:
        enc.encode(sym, idx)
    return calls, enc.finish()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    tail=st.binary(max_size=12),
)
def test_corrupt_streams_never_crash(y_table: CdfTable, fuzz_stream, cut: int, flips, tail: bytes) -> None:
    calls, data = fuzz_stream
    buf = bytearray(data[: max(0, len(data) - cut)])
    for pos, x in flips:
        if buf:
            buf[pos % len(buf)] ^= x
    buf += tail
    try:
        dec = SymbolDecoder(y_table, bytes(buf))
        for sym, idx in calls:
            out = dec.decode(idx)
            assert out.dtype == np.int32 and out.shape == sym.shape
        dec.finish()
    except FormatError:
        pass


def test_tables_equal_the_scipy_construction_exactly(scale_table: torch.Tensor) -> None:
    """The tables are built without SciPy (import time); they must equal the SciPy-built ones bit for bit,
    or files written before would stop decoding. Reference: gennorm.ppf and special.gammaincc."""
    from scipy import special

    import hpcm.entropy.tables as tables

    for tail_mass, beta in ((1e-6, 1.5), (1e-6, 1.0), (1e-9, 2.0), (1e-3, 0.8)):
        ours = tables.ggm_tail_multiplier(tail_mass, beta)
        ref = float(-stats.gennorm.ppf(tail_mass / 2.0, beta))
        assert ours == pytest.approx(ref, rel=1e-14, abs=0)
        assert np.float32(ours) == np.float32(ref)
    rng = np.random.default_rng(0)
    scales = np.concatenate(
        [scale_table.numpy(), np.exp(rng.uniform(np.log(0.05), np.log(64.0), 400)).astype(np.float32)]
    )
    ours = build_ggm_cdf_table(scales)
    original = tables._ggm_lower_tail
    try:
        tables._ggm_lower_tail = lambda u, b: 0.5 * special.gammaincc(1.0 / b, np.abs(u) ** b)
        ref = build_ggm_cdf_table(scales)
    finally:
        tables._ggm_lower_tail = original
    assert ours == ref
