"""Bi-WKV operator: every implementation against the O(T^2) float64 reference (spec birwkv.md §2, §7)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from hpcm.ops import biwkv, biwkv_reference, numba_available
from hpcm.ops.biwkv import _BiWKVTorch

FAST_IMPLS = ["torch"] + (["fused"] if numba_available() else [])


def _inputs(B: int, T: int, C: int, decay_std: float = 3.0, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64) * 1.5
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    w = torch.randn(C, generator=g, dtype=torch.float64) * decay_std / T
    u = torch.randn(C, generator=g, dtype=torch.float64) / T
    return tuple(t.to(dtype) for t in (w, u, k, v))


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("mode", ["paper", "plain"])
@pytest.mark.parametrize("shape", [(2, 1, 3), (2, 37, 5), (1, 300, 17)])
def test_matches_reference_fp32(impl, mode, shape):
    w, u, k, v = _inputs(*shape)
    ref = biwkv_reference(w, u, k, v, mode=mode)
    y = biwkv(w, u, k, v, impl=impl, mode=mode)
    assert y.dtype == torch.float32 and y.shape == k.shape
    assert (y.double() - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_matches_reference_long_sequence(impl):
    w, u, k, v = _inputs(1, 4096, 2, decay_std=6.0)
    ref = biwkv_reference(w, u, k, v)
    assert (biwkv(w, u, k, v, impl=impl).double() - ref).abs().max() <= 1e-5


def test_offset_reparameterisation():
    w, u, k, v = _inputs(2, 23, 4, dtype=torch.float64)
    a = biwkv_reference(w, u, k, v, mode="paper")
    b = biwkv_reference(w, u - w, k, v, mode="plain")
    assert torch.allclose(a, b, atol=1e-12)


def test_reference_is_softmax_average():
    # a constant v is reproduced exactly; the reference against a naive loop at one point
    w, u, k, v = _inputs(1, 9, 2, dtype=torch.float64)
    y = biwkv_reference(w, u, k, torch.ones_like(v))
    assert torch.allclose(y, torch.ones_like(y))
    t, c = 4, 1
    num = den = 0.0
    for i in range(9):
        lg = (u[c] + k[0, t, c]) if i == t else (k[0, i, c] - (abs(t - i) - 1) * w[c])
        num += math.exp(lg) * v[0, i, c]
        den += math.exp(lg)
    assert abs(biwkv_reference(w, u, k, v)[0, t, c] - num / den) < 1e-12


@pytest.mark.parametrize("impl", FAST_IMPLS + ["kernel_exact"])
def test_gradcheck_float64(impl):
    w, u, k, v = _inputs(2, 7, 3, dtype=torch.float64)
    w = w * 7  # larger per-token decay makes every term visible
    args = tuple(t.clone().requires_grad_() for t in (w, u, k, v))
    mode = "kernel" if impl == "kernel_exact" else "paper"
    assert gradcheck(lambda *a: biwkv(*a, impl=impl, mode=mode, token_split=3), args)
    if impl != "kernel_exact":
        assert gradcheck(lambda *a: biwkv(*a, impl=impl, mode="plain"), args)


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("decay", [100.0, -100.0])
def test_big_decay_is_finite_and_accurate(impl, decay):
    T, C = 512, 3
    w, u, k, v = _inputs(1, T, C)
    w = torch.tensor([decay, decay / 3, -decay / 7]) / T
    k = k.clone().requires_grad_()
    wr = w.clone().requires_grad_()
    y = biwkv(wr, u, k, v, impl=impl)
    (y * v).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(k.grad).all() and torch.isfinite(wr.grad).all()
    assert (y.double() - biwkv_reference(w, u, k.detach(), v)).abs().max() <= 1e-5


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_fp32(impl, dtype):
    w, u, k, v = _inputs(2, 40, 4)
    kh, vh = k.to(dtype).requires_grad_(), v.to(dtype)
    y = biwkv(w, u, kh, vh, impl=impl)
    assert y.dtype == dtype
    ref = biwkv_reference(w, u, kh.detach().float(), vh.float())
    assert (y.double() - ref).abs().max() <= 1e-2  # only the final rounding to the half dtype
    y.float().sum().backward()
    assert kh.grad.dtype == dtype and torch.isfinite(kh.grad.float()).all()


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_deterministic(impl):
    w, u, k, v = _inputs(3, 64, 5)
    outs = []
    for _ in range(2):
        args = [t.clone().requires_grad_() for t in (w, u, k, v)]
        y = biwkv(*args, impl=impl)
        (y.square().sum()).backward()
        outs.append([y.detach()] + [a.grad for a in args])
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_fused_matches_torch_path_with_gradients():
    w, u, k, v = _inputs(2, 200, 20)
    grads = []
    for impl in ("torch", "fused"):
        args = [t.clone().requires_grad_() for t in (w, u, k, v)]
        y = biwkv(*args, impl=impl)
        (y * torch.cos(v)).sum().backward()
        grads.append([y.detach()] + [a.grad for a in args])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_torch_path_backward_saves_few_tensors():
    w, u, k, v = _inputs(1, 50, 4)
    k.requires_grad_()
    y = _BiWKVTorch.apply(w, u, k, v, 1)
    assert len(y.grad_fn.saved_tensors) == 6  # w, u, k, v, y, D


# ---- kernel-exact semantics (spec §2.3 test vector, T = 40) ------------------------------------------------

_T40 = [0, 1, 2, 3, 19, 20, 38, 39]
_T40_COLUMNS = {
    "plain": [0.488336504, 0.448598466, 0.325454333, 0.161532848, -0.284718773, -0.309160702, 0.446498933,
              0.523232158],
    "paper": [0.461603572, 0.405511062, 0.304186790, 0.165690823, -0.256227680, -0.265662636, 0.410175706,
              0.483474350],
    32: [0.488336504, 0.418090550, 0.325454333, 0.197591725, -0.259275900, -0.309160702, 0.446498933,
         0.506770662],
    64: [0.488336504, 0.448598466, 0.325454333, 0.161532848, -0.284718773, -0.309160702, 0.446498933,
         0.523232158],
}


def _t40(dtype=torch.float64):
    i = torch.arange(40, dtype=torch.float64)
    k = torch.sin(i)[None, :, None].to(dtype)
    v = torch.cos(0.5 * i)[None, :, None].to(dtype)
    return torch.tensor([0.3], dtype=dtype), torch.tensor([0.1], dtype=dtype), k, v


@pytest.mark.parametrize("col", list(_T40_COLUMNS))
def test_spec_vector_t40(col):
    w, u, k, v = _t40()
    expected = torch.tensor(_T40_COLUMNS[col], dtype=torch.float64)
    if isinstance(col, int):
        y = biwkv(w, u, k, v, impl="kernel_exact", token_split=col)
        ref = biwkv_reference(w, u, k, v, mode="kernel", token_split=col)
        assert torch.allclose(ref[0, _T40, 0], expected, atol=1e-8)
        y32 = biwkv(*_t40(torch.float32), mode="kernel", token_split=col)
        assert (y32[0, _T40, 0].double() - expected).abs().max() < 1e-6
    else:
        y = biwkv(w, u, k, v, impl="torch", mode=col)
    assert torch.allclose(y[0, _T40, 0], expected, atol=1e-8)


@pytest.mark.parametrize("token_split", [32, 64])
@pytest.mark.parametrize("T", [20, 100, 257])
def test_kernel_exact_vectorised_matches_closed_form(token_split, T):
    w, u, k, v = _inputs(2, T, 3, decay_std=9.0)
    ref = biwkv_reference(w, u, k, v, mode="kernel", token_split=token_split)
    y = biwkv(w, u, k, v, mode="kernel", token_split=token_split)
    assert (y.double() - ref).abs().max() <= 1e-5
    if T <= token_split:  # one token per chunk: the clean offset-0 form = the paper form with bonus u + w
        assert (y.double() - biwkv_reference(w, u, k, v, mode="plain")).abs().max() <= 1e-5
        assert (y.double() - biwkv_reference(w, u + w, k, v, mode="paper")).abs().max() <= 1e-5


def test_bad_arguments():
    w, u, k, v = _inputs(1, 5, 2)
    with pytest.raises(ValueError):
        biwkv(w, u, k, v, impl="nope")
    with pytest.raises(ValueError):
        biwkv(w, u, k, v, mode="nope")
    with pytest.raises(ValueError):
        biwkv(w[:1], u, k, v)
    with pytest.raises(ValueError):
        biwkv(w, u, k, v, impl="fused", mode="kernel")
    with pytest.raises(RuntimeError):
        biwkv(w, u, k, v, impl="triton")  # no CUDA here


# ---- the fused kernel's polynomial float32 exp -------------------------------------------------------------


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_fused_polynomial_exp_accuracy_over_its_domain():
    import numba
    import numpy as np

    from hpcm.ops._biwkv_numba import expf

    @numba.njit
    def apply(x, out):  # the same loop shape as the kernels: vectorised by LLVM
        for i in range(x.size):
            out[i] = expf(x[i])

    grid = np.linspace(-87.0, 88.0, 1_000_001)
    tiny = [-0.0, float(np.nextafter(np.float32(0), np.float32(-1)))]
    x = np.concatenate([grid, np.linspace(-1.0, 1.0, 100_001), tiny]).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(out.astype(np.float64) - ref) / ref
    assert rel.max() <= 2.5e-7  # ~2 float32 ulp (measured 8e-8)
    assert np.all(np.diff(out[:1_000_001]) >= 0)  # monotone on the grid
    # below the domain: flushed to ~e^-87 (< 2e-38), never negative, inf or NaN; NaN propagates
    lo = np.array([-87.5, -100.0, -1e30, -np.inf], dtype=np.float32)
    out_lo = np.empty_like(lo)
    apply(lo, out_lo)
    assert np.all((out_lo >= 0) & (out_lo < 2e-38))
    nan = np.array([np.nan], dtype=np.float32)
    apply(nan, nan)
    assert np.isnan(nan).all()


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
@pytest.mark.parametrize("shape", [(1, 4096, 16), (2, 300, 33)])  # many tiles; padded channels
def test_fused_fp32_long_and_padded(shape):
    w, u, k, v = _inputs(*shape, decay_std=6.0)
    ref = biwkv_reference(w, u, k, v)
    assert (biwkv(w, u, k, v, impl="fused").double() - ref).abs().max() <= 1e-5
