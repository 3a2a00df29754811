"""Triton Bi-WKV kernels (GPU), offset-0 form with bonus ``u0`` (the caller maps modes: ``u0 = u - o w``).

Status: the unchunked kernels were compiled and run on an NVIDIA H200 (session 8, docs/results/gpu/): they
agree with the float64 O(T^2) reference there, as in the Triton interpreter (``TRITON_INTERPRET=1``, CPU
tensors; ``tests/test_biwkv_triton.py``). The chunked kernels (session 9) are verified in the interpreter and
compiled ahead of time for sm_90 only.

Algorithm. Channels lie along the vector lanes (blocks of ``BLOCK_C``), so every load/store of a token is one
contiguous run of ``BLOCK_C`` floats of the (B, T, C) layout. All arithmetic is float32 (fp16/bf16/fp64
inputs are cast by the wrapper).

Forward, chunked (session 9; the first GPU run measured the one-program-per-channel-block scan 47x slower
than the torch path at (1, 98304, 96), where B·C/32 = 3 programs leave the GPU idle): the tokens are cut
into chunks of ``L`` and three kernels run: (1) one program per (batch, channel block, chunk) reduces its
chunk to a past-side and a future-side summary (the chunk's decayed sums, log-scaled, seen from just after
/ just before it); (2) one program per (batch, channel block) runs a short sequential scan over the chunk
summaries and writes each chunk's incoming past and future state; (3) one program per (batch, channel
block, chunk) scans its chunk right to left and left to right from those states, as the unchunked kernel
did over the whole sequence. With one chunk, (3) alone is the unchunked kernel. The backward is chunked
the same way (below). Both are verified in the Triton interpreter only; their speed on a GPU is unmeasured.

Numerics (spec birwkv.md §3.2 style, log-scaled sums). A one-sided decayed sum
``S_t = sum_{i<t} exp(k_i - w (t - i)) x_i`` is kept as ``(a, kj, j)``: ``S_t = a * exp(p_t)`` with the scale
``p_t = kj - w (t - j)`` anchored at the token ``j`` (logit ``kj``) that last raised the maximum. The scale is
recomputed from ``(kj, j)`` at every step instead of being decremented by ``w`` (no accumulated rounding of a
large log-scale), the per-token decay never multiplies the accumulator, and adding a token needs one ``exp``
(of ``-|p_t - k_t|``). Every factor that is exponentiated is a difference of logits bounded by the true
log-magnitudes, so nothing overflows for any ``|w| * T`` representable in float32 (tested at ``|w| T = 100``).

Forward: a right-to-left loop writes the exclusive future sums as (ratio, log-denominator) into two scratch
tensors, then a left-to-right loop combines them with the past sums and the bonus term under a common maximum,
writing ``y`` and ``log D``. Backward (spec §2.4): the same two sweeps carry decayed sums of ``q = g / D`` and
``q y`` (for gk, gv) and distance-weighted sums of ``e^k`` and ``e^k v`` (for gw); chunked like the forward
(moving a distance-weighted sum L tokens further adds L times the plain sum); gw and gu are written as
per-(batch, chunk, channel) partials and summed in a fixed order, so the result is deterministic.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["BiWKVTriton", "available", "chunk_length", "interpreted", "forward", "backward"]

_BLOCK_C = 32
_NEG = tl.constexpr(-1.0e38)  # "log of zero" for an empty sum; finite so that differences never produce NaN

# Triton picks the interpreter when the decorators run (module import), from this variable.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreted() -> bool:
    """True when this module's kernels were built for the Triton interpreter (CPU tensors)."""
    return _INTERPRETED


def available() -> bool:
    """True when the kernels can run: the interpreter is active, or CUDA is present."""
    return _INTERPRETED or torch.cuda.is_available()


@triton.jit
def _scale(kj, j, t, w, sign: tl.constexpr):
    """Log-scale of a one-sided sum at token t: kj - w * distance(t, j); sign +1 past, -1 future."""
    return kj - w * ((t - j) * sign).to(tl.float32)


@triton.jit
def _push2(a, b, kj, j, p, t, kt, x, y):
    """Add exp(kt) * (x, y) at token t to the pair (a, b) held at scale p (anchor kj, j)."""
    return _merge(a, b, kj, j, p, x, y, kt, t, kt)


@triton.jit
def _merge(a, b, kj, j, p, a2, b2, kj2, j2, p2):
    """Add the pair (a2, b2) held at scale p2 (anchor kj2, j2) to (a, b) held at scale p (anchor kj, j)."""
    d = p - p2
    e = tl.exp(-tl.abs(d))
    keep = d >= 0
    r = tl.where(keep, 1.0, e)
    en = tl.where(keep, e, 1.0)
    return a * r + a2 * en, b * r + b2 * en, tl.where(keep, kj, kj2), tl.where(keep, j, j2)


@triton.jit
def _load_state(ptr, slot, C, c, msk):
    """(a, b, kj, j) stored at ``ptr + (slot + 0..3) * C + c`` (j as float32, exact below 2^24)."""
    a = tl.load(ptr + slot * C + c, mask=msk, other=0.0)
    b = tl.load(ptr + (slot + 1) * C + c, mask=msk, other=0.0)
    kj = tl.load(ptr + (slot + 2) * C + c, mask=msk, other=_NEG)
    j = tl.load(ptr + (slot + 3) * C + c, mask=msk, other=0.0).to(tl.int32)
    return a, b, kj, j


@triton.jit
def _store_state(ptr, slot, C, c, msk, a, b, kj, j):
    tl.store(ptr + slot * C + c, a, mask=msk)
    tl.store(ptr + (slot + 1) * C + c, b, mask=msk)
    tl.store(ptr + (slot + 2) * C + c, kj, mask=msk)
    tl.store(ptr + (slot + 3) * C + c, j.to(tl.float32), mask=msk)


@triton.jit
def _chunk_program(w_ptr, T, C, L, BLOCK_C: tl.constexpr):
    """This program's batch, chunk, channel lanes, lane mask, w, token-0 offsets, chunk start and stop."""
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(2)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    msk = c < C
    w = tl.load(w_ptr + c, mask=msk, other=0.0)
    base = pid_b.to(tl.int64) * T * C + c
    start = pid_n * L
    return pid_b, pid_n, c, msk, w, base, start, tl.minimum(start + L, T)


@triton.jit
def _chunk_sums_kernel(w_ptr, k_ptr, v_ptr, sum_ptr, T, C, L, NCHUNK, BLOCK_C: tl.constexpr):
    """Per (batch, channel block, chunk): the chunk's past-side and future-side decayed sums (anchor form)."""
    pid_b, pid_n, c, msk, w, base, start, stop = _chunk_program(w_ptr, T, C, L, BLOCK_C)
    zero = tl.zeros([BLOCK_C], dtype=tl.float32)
    out = sum_ptr + (pid_b.to(tl.int64) * NCHUNK + pid_n) * 8 * C
    a = zero
    b = zero
    kj = zero + _NEG
    j = tl.zeros([BLOCK_C], dtype=tl.int32)
    for t in range(start, stop):  # past side: what tokens after the chunk see
        off = base + tl.cast(t, tl.int64) * C
        kt = tl.load(k_ptr + off, mask=msk, other=0.0)
        vt = tl.load(v_ptr + off, mask=msk, other=0.0)
        a, b, kj, j = _push2(a, b, kj, j, _scale(kj, j, t, w, 1), t, kt, vt, 1.0)
    _store_state(out, 0, C, c, msk, a, b, kj, j)
    a = zero
    b = zero
    kj = zero + _NEG
    j = tl.zeros([BLOCK_C], dtype=tl.int32)
    for i in range(0, stop - start):  # future side: what tokens before the chunk see
        t = stop - 1 - i
        off = base + tl.cast(t, tl.int64) * C
        kt = tl.load(k_ptr + off, mask=msk, other=0.0)
        vt = tl.load(v_ptr + off, mask=msk, other=0.0)
        a, b, kj, j = _push2(a, b, kj, j, _scale(kj, j, t, w, -1), t, kt, vt, 1.0)
    _store_state(out, 4, C, c, msk, a, b, kj, j)


@triton.jit
def _chunk_prefix_kernel(w_ptr, sum_ptr, init_ptr, T, C, L, NCHUNK, BLOCK_C: tl.constexpr):
    """Per (batch, channel block): each chunk's incoming past state (all earlier chunks, slots 0-3) and
    future state (all later chunks, slots 4-7), by a sequential scan over the chunk summaries."""
    pid_b, _, c, msk, w, _, _, _ = _chunk_program(w_ptr, T, C, L, BLOCK_C)  # (a 2-D grid: chunk 0)
    zero = tl.zeros([BLOCK_C], dtype=tl.float32)
    row = pid_b.to(tl.int64) * NCHUNK * 8 * C
    a = zero
    b = zero
    kj = zero + _NEG
    j = tl.zeros([BLOCK_C], dtype=tl.int32)
    for n in range(0, NCHUNK):
        at = row + n * 8 * C
        _store_state(init_ptr + at, 0, C, c, msk, a, b, kj, j)
        a2, b2, kj2, j2 = _load_state(sum_ptr + at, 0, C, c, msk)
        r = tl.minimum((n + 1) * L, T)  # the first token after chunk n
        p, p2 = _scale(kj, j, r, w, 1), _scale(kj2, j2, r, w, 1)
        a, b, kj, j = _merge(a, b, kj, j, p, a2, b2, kj2, j2, p2)
    a = zero
    b = zero
    kj = zero + _NEG
    j = tl.zeros([BLOCK_C], dtype=tl.int32)
    for i in range(0, NCHUNK):
        n = NCHUNK - 1 - i
        at = row + n * 8 * C
        _store_state(init_ptr + at, 4, C, c, msk, a, b, kj, j)
        a2, b2, kj2, j2 = _load_state(sum_ptr + at, 4, C, c, msk)
        r = n * L - 1  # the last token before chunk n
        p, p2 = _scale(kj, j, r, w, -1), _scale(kj2, j2, r, w, -1)
        a, b, kj, j = _merge(a, b, kj, j, p, a2, b2, kj2, j2, p2)


@triton.jit
def _push_dist(sa, sc, wa, wc, kj, j, p, t, kt, x):
    """Add token t (exp(kt) * (x, 1)) to plain sums (sa, sc) and distance-weighted sums (wa, wc).

    Before the implicit one-step shift: W <- W + S + new, S <- S + new (all at a common scale).
    """
    d = p - kt
    e = tl.exp(-tl.abs(d))
    keep = d >= 0
    r = tl.where(keep, 1.0, e)
    en = tl.where(keep, e, 1.0)
    wa = (wa + sa) * r + x * en
    wc = (wc + sc) * r + en
    sa = sa * r + x * en
    sc = sc * r + en
    kj = tl.where(keep, kj, kt)
    j = tl.where(keep, j, t)
    return sa, sc, wa, wc, kj, j


@triton.jit
def _fwd_kernel(
    w_ptr, u_ptr, k_ptr, v_ptr, y_ptr, ld_ptr, fr_ptr, fl_ptr, init_ptr, T, C, L, NCHUNK,
    BLOCK_C: tl.constexpr,
):
    pid_b, pid_n, c, msk, w, base, start, stop = _chunk_program(w_ptr, T, C, L, BLOCK_C)
    u0 = tl.load(u_ptr + c, mask=msk, other=0.0)
    init = init_ptr + (pid_b.to(tl.int64) * NCHUNK + pid_n) * 8 * C
    # right to left from the later chunks' state: exclusive future sums -> (ratio, log-denominator)
    a, b, kj, j = _load_state(init, 4, C, c, msk)
    for i in range(0, stop - start):
        t = stop - 1 - i
        off = base + tl.cast(t, tl.int64) * C
        kt = tl.load(k_ptr + off, mask=msk, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + off, mask=msk, other=0.0).to(tl.float32)
        p = _scale(kj, j, t, w, -1)
        nz = b > 0
        bs = tl.where(nz, b, 1.0)
        tl.store(fr_ptr + off, tl.where(nz, a / bs, 0.0), mask=msk)
        tl.store(fl_ptr + off, tl.where(nz, p + tl.log(bs), _NEG), mask=msk)
        a, b, kj, j = _push2(a, b, kj, j, p, t, kt, vt, 1.0)
    tl.debug_barrier()
    # left to right from the earlier chunks' state: past sums, bonus term, output
    a, b, kj, j = _load_state(init, 0, C, c, msk)
    for t in range(start, stop):
        off = base + tl.cast(t, tl.int64) * C
        kt = tl.load(k_ptr + off, mask=msk, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + off, mask=msk, other=0.0).to(tl.float32)
        fr = tl.load(fr_ptr + off, mask=msk, other=0.0)
        fl = tl.load(fl_ptr + off, mask=msk, other=_NEG)
        p = _scale(kj, j, t, w, 1)
        s1 = u0 + kt
        m = tl.maximum(tl.maximum(s1, p), fl)
        e1 = tl.exp(s1 - m)
        e2 = tl.exp(p - m)
        e3 = tl.exp(fl - m)
        den = e1 + b * e2 + e3
        num = e1 * vt + a * e2 + fr * e3
        tl.store(y_ptr + off, num / den, mask=msk)
        tl.store(ld_ptr + off, m + tl.log(den), mask=msk)
        a, b, kj, j = _push2(a, b, kj, j, p, t, kt, vt, 1.0)


@triton.jit
def _merge4(a, b, c2, d, kj, j, p, a2, b2, c3, d2, kj2, j2, p2):
    """``_merge`` for four sums sharing one scale: (a, b, c2, d) at p plus (a2, b2, c3, d2) at p2."""
    dd = p - p2
    e = tl.exp(-tl.abs(dd))
    keep = dd >= 0
    r = tl.where(keep, 1.0, e)
    en = tl.where(keep, e, 1.0)
    return (a * r + a2 * en, b * r + b2 * en, c2 * r + c3 * en, d * r + d2 * en,
            tl.where(keep, kj, kj2), tl.where(keep, j, j2))


@triton.jit
def _load_bwd_state(ptr, slot, C, c, msk):
    """Backward sweep state at ``slot``..``slot + 9``: q-sums (qa, qb, qkj, qj), k-sums (sa, sc, wa, wc,
    kkj, kj)."""
    qa, qb, qkj, qj = _load_state(ptr, slot, C, c, msk)
    sa = tl.load(ptr + (slot + 4) * C + c, mask=msk, other=0.0)
    sc = tl.load(ptr + (slot + 5) * C + c, mask=msk, other=0.0)
    wa, wc, kkj, kj = _load_state(ptr, slot + 6, C, c, msk)
    return qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj


@triton.jit
def _store_bwd_state(ptr, slot, C, c, msk, qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj):
    _store_state(ptr, slot, C, c, msk, qa, qb, qkj, qj)
    tl.store(ptr + (slot + 4) * C + c, sa, mask=msk)
    tl.store(ptr + (slot + 5) * C + c, sc, mask=msk)
    _store_state(ptr, slot + 6, C, c, msk, wa, wc, kkj, kj)


@triton.jit
def _bwd_sweep(
    w, u0, k_ptr, v_ptr, y_ptr, ld_ptr, g_ptr, gk_ptr, gv_ptr, base, C, start, stop, msk,
    sweep: tl.constexpr,
    write: tl.constexpr, qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj,
):
    """One sweep over tokens [start, stop): 0 right to left (future side), 1 left to right (past side).

    With ``write``, adds each token's gk, gv terms of this side (sweep 1 also the bonus term, on top of what
    sweep 0 stored) and returns the partial gw, gu sums; without, only carries the sums (chunk summaries).
    """
    accw = tl.zeros_like(w)
    accu = tl.zeros_like(w)
    for i in range(0, stop - start):
        if sweep == 0:
            t = stop - 1 - i
        else:
            t = start + i
        off = base + tl.cast(t, tl.int64) * C
        kt = tl.load(k_ptr + off, mask=msk, other=0.0).to(tl.float32)
        vt = tl.load(v_ptr + off, mask=msk, other=0.0).to(tl.float32)
        yt = tl.load(y_ptr + off, mask=msk, other=0.0)
        lt = -tl.load(ld_ptr + off, mask=msk, other=0.0)  # log(1 / D_t)
        gt = tl.load(g_ptr + off, mask=msk, other=0.0).to(tl.float32)
        if sweep == 0:
            pq = _scale(qkj, qj, t, w, -1)
            pk = _scale(kkj, kj, t, w, -1)
        else:
            pq = _scale(qkj, qj, t, w, 1)
            pk = _scale(kkj, kj, t, w, 1)
        if write:
            # gk, gv of token t from the q-sums of the other tokens on this side (e^{k_t + pq} <= ~1)
            ef = tl.exp(kt + pq)
            gv_t = ef * qa
            gk_t = ef * (vt * qa - qb)
            # gw: q_t * sum_i (distance) a_{t,i} (v_i - y_t) on this side (e^{pk + lt} <= ~1)
            accw += tl.exp(pk + lt) * gt * (wa - yt * wc)
            if sweep == 1:
                dq = tl.exp(u0 + kt + lt) * gt
                gv_t += dq + tl.load(gv_ptr + off, mask=msk, other=0.0)
                gk_t += dq * (vt - yt) + tl.load(gk_ptr + off, mask=msk, other=0.0)
                accu += dq * (vt - yt)
            tl.store(gv_ptr + off, gv_t, mask=msk)
            tl.store(gk_ptr + off, gk_t, mask=msk)
        qa, qb, qkj, qj = _push2(qa, qb, qkj, qj, pq, t, lt, gt, gt * yt)
        sa, sc, wa, wc, kkj, kj = _push_dist(sa, sc, wa, wc, kkj, kj, pk, t, kt, vt)
    return accw, accu, qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj


@triton.jit
def _bwd_chunk_sums_kernel(
    w_ptr, u_ptr, k_ptr, v_ptr, y_ptr, ld_ptr, g_ptr, sum_ptr, T, C, L, NCHUNK, BLOCK_C: tl.constexpr,
):
    """Per (batch, channel block, chunk): both sweeps' sums over the chunk alone (slots 0-9 future side,
    10-19 past side), as seen from just before / just after the chunk."""
    pid_b, pid_n, c, msk, w, base, start, stop = _chunk_program(w_ptr, T, C, L, BLOCK_C)
    u0 = tl.load(u_ptr + c, mask=msk, other=0.0)
    out = sum_ptr + (pid_b.to(tl.int64) * NCHUNK + pid_n) * 20 * C
    zero = tl.zeros([BLOCK_C], dtype=tl.float32)
    izero = tl.zeros([BLOCK_C], dtype=tl.int32)
    for sweep in tl.static_range(2):
        _, _, qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj = _bwd_sweep(
            w, u0, k_ptr, v_ptr, y_ptr, ld_ptr, g_ptr, k_ptr, k_ptr, base, C, start, stop, msk, sweep, False,
            zero, zero, zero + _NEG, izero, zero, zero, zero, zero, zero + _NEG, izero,
        )
        _store_bwd_state(out, sweep * 10, C, c, msk, qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj)


@triton.jit
def _bwd_chunk_prefix_kernel(w_ptr, sum_ptr, init_ptr, T, C, L, NCHUNK, BLOCK_C: tl.constexpr):
    """Per (batch, channel block): each chunk's incoming sweep states from the chunk summaries: slots 0-9
    all later chunks (seen from the chunk's last token), 10-19 all earlier ones (from its first token)."""
    pid_b, _, c, msk, w, _, _, _ = _chunk_program(w_ptr, T, C, L, BLOCK_C)  # (a 2-D grid: chunk 0)
    zero = tl.zeros([BLOCK_C], dtype=tl.float32)
    izero = tl.zeros([BLOCK_C], dtype=tl.int32)
    row = pid_b.to(tl.int64) * NCHUNK * 20 * C
    for sweep in tl.static_range(2):
        qa = zero
        qb = zero
        qkj = zero + _NEG
        qj = izero
        sa = zero
        sc = zero
        wa = zero
        wc = zero
        kkj = zero + _NEG
        kj = izero
        for i in range(0, NCHUNK):
            if sweep == 0:
                n = NCHUNK - 1 - i
            else:
                n = i
            at = row + n * 20 * C
            _store_bwd_state(init_ptr + at, sweep * 10, C, c, msk, qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj)
            length = (tl.minimum((n + 1) * L, T) - n * L).to(tl.float32)
            wa += length * sa  # every token already summed is `length` tokens further from the new reference
            wc += length * sc
            summary = _load_bwd_state(sum_ptr + at, sweep * 10, C, c, msk)
            qa2, qb2, qkj2, qj2, sa2, sc2, wa2, wc2, kkj2, kj2 = summary
            if sweep == 0:
                r = n * L - 1  # the last token before chunk n
                pq, pq2 = _scale(qkj, qj, r, w, -1), _scale(qkj2, qj2, r, w, -1)
                pk, pk2 = _scale(kkj, kj, r, w, -1), _scale(kkj2, kj2, r, w, -1)
            else:
                r = tl.minimum((n + 1) * L, T)  # the first token after chunk n
                pq, pq2 = _scale(qkj, qj, r, w, 1), _scale(qkj2, qj2, r, w, 1)
                pk, pk2 = _scale(kkj, kj, r, w, 1), _scale(kkj2, kj2, r, w, 1)
            qa, qb, qkj, qj = _merge(qa, qb, qkj, qj, pq, qa2, qb2, qkj2, qj2, pq2)
            sa, sc, wa, wc, kkj, kj = _merge4(sa, sc, wa, wc, kkj, kj, pk, sa2, sc2, wa2, wc2, kkj2, kj2, pk2)


@triton.jit
def _bwd_kernel(
    w_ptr, u_ptr, k_ptr, v_ptr, y_ptr, ld_ptr, g_ptr, gk_ptr, gv_ptr, gw_ptr, gu_ptr, init_ptr, T, C, L,
    NCHUNK, BLOCK_C: tl.constexpr,
):
    """Per (batch, channel block, chunk): both sweeps over the chunk from its incoming states; gk, gv and
    the chunk's partial gw, gu (B, NCHUNK, C)."""
    pid_b, pid_n, c, msk, w, base, start, stop = _chunk_program(w_ptr, T, C, L, BLOCK_C)
    u0 = tl.load(u_ptr + c, mask=msk, other=0.0)
    init = init_ptr + (pid_b.to(tl.int64) * NCHUNK + pid_n) * 20 * C
    accw = tl.zeros([BLOCK_C], dtype=tl.float32)
    accu = tl.zeros([BLOCK_C], dtype=tl.float32)
    for sweep in tl.static_range(2):
        qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj = _load_bwd_state(init, sweep * 10, C, c, msk)
        dw, du, qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj = _bwd_sweep(
            w, u0, k_ptr, v_ptr, y_ptr, ld_ptr, g_ptr, gk_ptr, gv_ptr, base, C, start, stop, msk, sweep, True,
            qa, qb, qkj, qj, sa, sc, wa, wc, kkj, kj,
        )
        accw += dw
        accu += du
        tl.debug_barrier()
    out = (pid_b.to(tl.int64) * NCHUNK + pid_n) * C + c
    tl.store(gw_ptr + out, -accw, mask=msk)
    tl.store(gu_ptr + out, accu, mask=msk)


def _grid(B: int, C: int) -> tuple[int, int]:
    return (B, triton.cdiv(C, _BLOCK_C))


#: Programs the chunked forward aims for (about 16 one-warp programs per SM of an H100/H200).
TARGET_PROGRAMS = 2048


def chunk_length(B: int, T: int, C: int) -> int:
    """Tokens per chunk: a power of two >= 32 giving about ``TARGET_PROGRAMS`` programs in all."""
    per_chunk = B * triton.cdiv(C, _BLOCK_C)
    want = max(1, TARGET_PROGRAMS // per_chunk)
    length = triton.next_power_of_2(max(1, triton.cdiv(T, want)))
    return max(32, length)


def forward(w: Tensor, u0: Tensor, k: Tensor, v: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """k, v (B, T, C) float32 contiguous; w, u0 (C,) float32 -> (y, log D), both (B, T, C) float32.

    ``chunk``: tokens per chunk (default :func:`chunk_length`; ``chunk >= T`` is the unchunked scan).
    """
    B, T, C = k.shape
    length = max(1, min(int(chunk or chunk_length(B, T, C)), T))
    nchunk = triton.cdiv(T, length)
    y = torch.empty_like(k)
    ld = torch.empty_like(k)
    fr = torch.empty_like(k)
    fl = torch.empty_like(k)
    init = torch.zeros(B, nchunk, 8, C, dtype=torch.float32, device=k.device)
    init[:, :, 2].fill_(-1.0e38)  # empty incoming states: "log of zero" scales
    init[:, :, 6].fill_(-1.0e38)
    grid = (*_grid(B, C), nchunk)
    if nchunk > 1:
        sums = torch.empty_like(init)
        _chunk_sums_kernel[grid](w, k, v, sums, T, C, length, nchunk, BLOCK_C=_BLOCK_C, num_warps=1)
        _chunk_prefix_kernel[_grid(B, C)](w, sums, init, T, C, length, nchunk, BLOCK_C=_BLOCK_C, num_warps=1)
    _fwd_kernel[grid](w, u0, k, v, y, ld, fr, fl, init, T, C, length, nchunk, BLOCK_C=_BLOCK_C, num_warps=1)
    return y, ld


def backward(
    w: Tensor, u0: Tensor, k: Tensor, v: Tensor, y: Tensor, ld: Tensor, g: Tensor, chunk: int | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients (gw0, gu0, gk, gv) of the offset-0 form; gw0, gu0 (C,) float64, gk, gv (B, T, C) float32.

    ``chunk`` as in :func:`forward`. gw, gu are summed over chunks and the batch in a fixed order.
    """
    B, T, C = k.shape
    length = max(1, min(int(chunk or chunk_length(B, T, C)), T))
    nchunk = triton.cdiv(T, length)
    gk = torch.empty_like(k)
    gv = torch.empty_like(k)
    gw = torch.empty(B, nchunk, C, dtype=torch.float32, device=k.device)
    gu = torch.empty(B, nchunk, C, dtype=torch.float32, device=k.device)
    init = torch.zeros(B, nchunk, 20, C, dtype=torch.float32, device=k.device)
    for slot in (2, 8, 12, 18):  # empty incoming sums: "log of zero" scales
        init[:, :, slot].fill_(-1.0e38)
    grid = (*_grid(B, C), nchunk)
    if nchunk > 1:
        sums = torch.empty_like(init)
        _bwd_chunk_sums_kernel[grid](w, u0, k, v, y, ld, g, sums, T, C, length, nchunk, BLOCK_C=_BLOCK_C,
                                     num_warps=1)
        _bwd_chunk_prefix_kernel[_grid(B, C)](w, sums, init, T, C, length, nchunk, BLOCK_C=_BLOCK_C,
                                              num_warps=1)
    _bwd_kernel[grid](w, u0, k, v, y, ld, g, gk, gv, gw, gu, init, T, C, length, nchunk, BLOCK_C=_BLOCK_C,
                      num_warps=1)
    return gw.double().sum((0, 1)), gu.double().sum((0, 1)), gk, gv


class BiWKVTriton(torch.autograd.Function):
    """Autograd wrapper: (w, u, k, v, offset) -> y (B, T, C) in k's dtype; computed in float32."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, u: Tensor, k: Tensor, v: Tensor, offset: int) -> Tensor:  # type: ignore[override]
        wc = w.detach().float().contiguous()
        u0 = (u.detach().double() - offset * w.detach().double()).float().contiguous()
        kc = k.detach().float().contiguous()
        vc = v.detach().float().contiguous()
        y, ld = forward(wc, u0, kc, vc)
        ctx.save_for_backward(wc, u0, kc, vc, y, ld)
        ctx.offset = offset
        ctx.dtypes = (w.dtype, u.dtype, k.dtype, v.dtype)
        return y.to(k.dtype if k.dtype.is_floating_point else torch.float32)

    @staticmethod
    def backward(ctx: Any, gy: Tensor):  # type: ignore[override]
        wc, u0, kc, vc, y, ld = ctx.saved_tensors
        gw0, gu0, gk, gv = backward(wc, u0, kc, vc, y, ld, gy.float().contiguous())
        tw, tu, tk, tv = ctx.dtypes
        gw = (gw0 - ctx.offset * gu0).to(tw)
        return gw, gu0.to(tu), gk.to(tk), gv.to(tv), None
