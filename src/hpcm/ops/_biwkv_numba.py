"""Fused CPU Bi-WKV kernels (Numba), offset-0 form with bonus ``u0`` (the dispatcher maps offsets).

Per (batch, block of ``_CB`` channels) the forward makes two passes over (T, channels): a right-to-left scan
writing the exclusive future sums, and a left-to-right scan that adds the past sums and writes y and the
denominator. The per-channel max of k is one vectorised torch reduction, shared with the backward.
Accumulators are float64, with keys shifted by their per-channel maximum, so the exponents stay finite for
``|w| * T`` up to about 300 and the result does not depend on the thread count. (Tried and rejected, slower on
this 2-core AVX2 machine without SVML: token-tiled per-channel scalar scans, and splitting the exp calls from
the arithmetic in the channel loop; the 16 interleaved channel recursions per token hide the recurrence
latency better.)

The backward (spec §2.4) makes the same two passes: decayed sums of ``q = g / D`` and ``q * y`` give gk, gv;
distance-weighted running sums give gw; per-(batch, channel) partials of gw, gu are reduced in a fixed order.
Importing this module imports numba; the kernels compile on first call (``cache=True`` keeps them on disk).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

_CB = 16  # channels per work item: one 64-byte line of float32


@njit(parallel=True, cache=True, error_model="numpy")
def _forward_kernel(w, u0, kmax, k, v, y, den, fnum, fden, want_den):  # pragma: no cover - compiled
    B, T, C = k.shape
    nblk = (C + _CB - 1) // _CB
    for job in prange(B * nblk):
        b = job // nblk
        c0 = (job % nblk) * _CB
        n = min(_CB, C - c0)
        m = kmax[b, c0:c0 + n]
        ew = np.empty(n)
        eu = np.empty(n)
        eneg = np.empty(n)  # exp(min(w, 0)): per-step factor of the scratch scale
        for j in range(n):
            ew[j] = math.exp(-w[c0 + j])
            eu[j] = math.exp(u0[c0 + j])
            eneg[j] = math.exp(min(w[c0 + j], 0.0))
        an = np.zeros(n)
        ad = np.zeros(n)
        sc = np.ones(n)
        # right to left: exclusive future sums, stored scaled by exp(min(w,0) (T-1-t)) so they fit the
        # scratch dtype (the future sums grow like exp(|w| (T-1-t)) when w < 0)
        for t in range(T - 1, -1, -1):
            for j in range(n):
                c = c0 + j
                fnum[b, t, c] = an[j] * sc[j]
                fden[b, t, c] = ad[j] * sc[j]
                e = math.exp(k[b, t, c] - m[j])
                an[j] = ew[j] * (an[j] + e * v[b, t, c])
                ad[j] = ew[j] * (ad[j] + e)
                sc[j] *= eneg[j]
        for j in range(n):
            an[j] = 0.0
            ad[j] = 0.0
            sc[j] = math.exp(-min(w[c0 + j], 0.0) * (T - 1))
        # left to right: past sums, output
        for t in range(T):
            for j in range(n):
                c = c0 + j
                e = math.exp(k[b, t, c] - m[j])
                vv = v[b, t, c]
                dg = eu[j] * e
                d = dg + ad[j] + fden[b, t, c] * sc[j]
                y[b, t, c] = (dg * vv + an[j] + fnum[b, t, c] * sc[j]) / d
                if want_den:
                    den[b, t, c] = d
                an[j] = ew[j] * (an[j] + e * vv)
                ad[j] = ew[j] * (ad[j] + e)
                sc[j] *= eneg[j]


@njit(parallel=True, cache=True, error_model="numpy")
def _backward_kernel(w, u0, kmax, k, v, y, den, g, gk, gv, gw_part, gu_part):  # pragma: no cover - compiled
    B, T, C = k.shape
    nblk = (C + _CB - 1) // _CB
    for job in prange(B * nblk):
        b = job // nblk
        c0 = (job % nblk) * _CB
        n = min(_CB, C - c0)
        m = kmax[b, c0:c0 + n]
        ew = np.empty(n)
        eu = np.empty(n)
        for j in range(n):
            ew[j] = math.exp(-w[c0 + j])
            eu[j] = math.exp(u0[c0 + j])
        sq = np.zeros(n)  # decayed sum of q over the other side
        sqy = np.zeros(n)  # ... of q*y
        sa = np.zeros(n)  # ... of e^k v
        sc = np.zeros(n)  # ... of e^k
        wa = np.zeros(n)  # distance-weighted sum of e^k v
        wc = np.zeros(n)  # distance-weighted sum of e^k
        accw = np.zeros(n)
        accu = np.zeros(n)
        # left to right: past contributions
        for t in range(T):
            for j in range(n):
                c = c0 + j
                e = math.exp(k[b, t, c] - m[j])
                vv = v[b, t, c]
                yy = y[b, t, c]
                q = g[b, t, c] / den[b, t, c]
                dq = eu[j] * e * q
                gv[b, t, c] = dq + e * sq[j]
                gk[b, t, c] = dq * (vv - yy) + e * (vv * sq[j] - sqy[j])
                accu[j] += dq * (vv - yy)
                accw[j] += q * (wa[j] - yy * wc[j])
                x = e * vv
                wa[j] = ew[j] * (wa[j] + sa[j] + x)
                wc[j] = ew[j] * (wc[j] + sc[j] + e)
                sa[j] = ew[j] * (sa[j] + x)
                sc[j] = ew[j] * (sc[j] + e)
                sq[j] = ew[j] * (sq[j] + q)
                sqy[j] = ew[j] * (sqy[j] + q * yy)
        sq[:] = 0.0
        sqy[:] = 0.0
        sa[:] = 0.0
        sc[:] = 0.0
        wa[:] = 0.0
        wc[:] = 0.0
        # right to left: future contributions
        for t in range(T - 1, -1, -1):
            for j in range(n):
                c = c0 + j
                e = math.exp(k[b, t, c] - m[j])
                vv = v[b, t, c]
                yy = y[b, t, c]
                q = g[b, t, c] / den[b, t, c]
                gv[b, t, c] += e * sq[j]
                gk[b, t, c] += e * (vv * sq[j] - sqy[j])
                accw[j] += q * (wa[j] - yy * wc[j])
                x = e * vv
                wa[j] = ew[j] * (wa[j] + sa[j] + x)
                wc[j] = ew[j] * (wc[j] + sc[j] + e)
                sa[j] = ew[j] * (sa[j] + x)
                sc[j] = ew[j] * (sc[j] + e)
                sq[j] = ew[j] * (sq[j] + q)
                sqy[j] = ew[j] * (sqy[j] + q * yy)
        for j in range(n):
            gw_part[b, c0 + j] = -accw[j]
            gu_part[b, c0 + j] = accu[j]


def _set_threads() -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _kmax(k: Tensor) -> Tensor:
    """Per-(batch, channel) maximum of k over the tokens, (B, C) in k's dtype (a vectorised torch reduction).

    Keeping k's dtype makes ``exp(k - kmax)`` a float32 exp for float32 inputs (about 2x cheaper than the
    float64 exp; its 1-ulp error is far below the 1e-5 target).
    """
    return k.detach().amax(dim=1).contiguous()


def forward(
    w: Tensor, u0: Tensor, k: Tensor, v: Tensor, want_den: bool = True, kmax: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """k, v (B, T, C) float32/float64 CPU; w, u0 (C,) -> (y in k's dtype, D~ float64), both (B, T, C).

    D~ (the denominator scaled by exp(-kmax), needed by the backward) is only written when ``want_den``;
    ``kmax`` (B, C) in k's dtype is the per-channel maximum of k (computed when not given).
    """
    _set_threads()
    if kmax is None:
        kmax = _kmax(k)
    y = torch.empty_like(k)
    den = torch.empty(k.shape if want_den else (1, 1, 1), dtype=torch.float64)
    fnum = torch.empty_like(k)
    fden = torch.empty_like(k)
    _forward_kernel(
        _np(w.double()), _np(u0.double()), _np(kmax), _np(k), _np(v), y.numpy(), den.numpy(), fnum.numpy(),
        fden.numpy(), want_den,
    )
    return y, den


def backward(
    w: Tensor, u0: Tensor, k: Tensor, v: Tensor, y: Tensor, den: Tensor, g: Tensor, kmax: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients (gw0, gu0, gk, gv) of the offset-0 form; gw0, gu0 (C,) float64, gk, gv like k.

    ``kmax`` must be the same per-channel maximum the forward used (D~ is scaled by it).
    """
    _set_threads()
    if kmax is None:
        kmax = _kmax(k)
    B, _, C = k.shape
    gk = torch.empty_like(k)
    gv = torch.empty_like(k)
    gw_part = torch.empty(B, C, dtype=torch.float64)
    gu_part = torch.empty(B, C, dtype=torch.float64)
    _backward_kernel(
        _np(w.double()),
        _np(u0.double()),
        _np(kmax),
        _np(k),
        _np(v),
        _np(y),
        _np(den),
        _np(g.to(k.dtype)),
        gk.numpy(),
        gv.numpy(),
        gw_part.numpy(),
        gu_part.numpy(),
    )
    return gw_part.sum(0), gu_part.sum(0), gk, gv


class BiWKVFused(torch.autograd.Function):
    """Autograd wrapper: (w, u, k, v, offset) -> y (B, T, C); fp16/bf16 are computed in float32."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, u: Tensor, k: Tensor, v: Tensor, offset: int) -> Tensor:  # type: ignore[override]
        cd = torch.float64 if torch.float64 in (w.dtype, u.dtype, k.dtype, v.dtype) else torch.float32
        kc, vc = k.to(cd).contiguous(), v.to(cd).contiguous()
        u0 = u.double() - offset * w.double()
        need = any(ctx.needs_input_grad[:4])
        kmax = _kmax(kc)
        y, den = forward(w, u0, kc, vc, want_den=need, kmax=kmax)
        ctx.save_for_backward(w, u, kc, vc, y, den, kmax)
        ctx.offset = offset
        ctx.dtypes = (w.dtype, u.dtype, k.dtype, v.dtype)
        return y.to(k.dtype if k.dtype.is_floating_point else torch.float32)

    @staticmethod
    def backward(ctx: Any, gy: Tensor):  # type: ignore[override]
        w, u, kc, vc, y, den, kmax = ctx.saved_tensors
        u0 = u.double() - ctx.offset * w.double()
        gw0, gu0, gk, gv = backward(w, u0, kc, vc, y, den, gy, kmax=kmax)
        tw, tu, tk, tv = ctx.dtypes
        gw = (gw0 - ctx.offset * gu0).to(tw)
        return gw, gu0.to(tu), gk.to(tk), gv.to(tv), None
