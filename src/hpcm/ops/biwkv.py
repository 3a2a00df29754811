"""Bi-WKV: the bidirectional, per-channel exponentially decayed softmax average of Vision-RWKV / LALIC.

For one (batch, channel) pair with keys ``k_t``, values ``v_t`` (t = 0..T-1), per-token decay ``w`` and bonus
``u`` (the modules pass ``decay / T`` and ``boost / T``), the published definition (spec birwkv.md §2.1) is::

    y_t = [ sum_{i != t} exp(k_i - (|t-i| - o) w) v_i + exp(u + k_t) v_t ]
        / [ sum_{i != t} exp(k_i - (|t-i| - o) w)     + exp(u + k_t)     ]

with distance offset ``o = 1`` (``mode="paper"``, the default) or ``o = 0`` (``mode="plain"``). The two are
reparameterisations of each other: ``y[o=1](w, u) == y[o=0](w, u - w)``. ``mode="kernel"`` instead reproduces
what the official CUDA kernel computes (spec §2.3: chunked with ``S = token_split`` chunks, offset 0 across
chunks, offset 1 inside a chunk plus a residual term); it is the function LALIC checkpoints were trained with.

Implementations (``impl=``):

``"reference"``
    O(T^2) float64 dense softmax (tests only; memory B*C*T^2).
``"torch"``
    O(T) two-cumsum algorithm (spec §7.2) as a custom ``autograd.Function`` whose backward recomputes the
    bidirectional sums (saves only w, u, k, v, y and the denominator). Computed in float32 (fp16/bf16 are
    upcast) while ``|w| * T`` is small enough for float32 exponents, in float64 beyond that (safe up to
    ``|w| * T`` of about 300). Deterministic.
``"fused"``
    Numba kernel (``_biwkv_numba``): two sequential scans over the tokens, vectorised over blocks of 16
    channels (a branch-free float32 polynomial exp that LLVM vectorises; float64 inputs use ``math.exp``),
    the forward tiled by 128 tokens so the second pass stays in cache; parallel over batch x channel blocks
    on Numba's workqueue threading layer (not OpenMP, which would change torch's thread count). Compiled
    lazily on first use (``cache=True``). Forward and backward; deterministic, bit-identical across thread
    counts.
``"kernel_exact"``
    Vectorised §7.4 evaluation of the CUDA kernel's function (float64, differentiated by autograd, i.e. the
    *exact* derivative of the kernel forward; the official CUDA backward returns a hybrid gk/gv, spec §2.4).
    Same as ``mode="kernel"``.
``"triton"``
    Triton scan kernels (``_biwkv_triton``): one program per (batch, block of 32 channels), sequential
    log-scaled scans over the tokens in float32, forward and backward, deterministic. Modes "paper" and
    "plain". Run on an H200 (2026-11-28, docs/results/gpu/): it agrees with the float64 reference, but its
    sequential scan over T with B·C/32 programs is slower than ``"torch"`` there: forward 86 ms vs 1.8 ms
    at (1, 98304, 96), 3.9 vs 1.2 ms at (8, 4096, 144), 1.0 vs 0.6 ms at (1, 1536, 640). So it is an
    explicit choice, not the CUDA default. Since session 9 forward and backward are chunked (about 2,048
    programs instead of B·C/32; verified in the interpreter, unmeasured on a GPU). CPU tensors only in the
    Triton interpreter (``TRITON_INTERPRET=1``).
``"auto"``
    CPU: ``"fused"`` when Numba imports and compiles, else ``"torch"``. CUDA: ``"torch"`` (measured faster
    than ``"triton"`` at every shape above). ``mode="kernel"``: ``"kernel_exact"``.

All paths take k, v of shape (B, T, C) and w, u of shape (C,), and return y (B, T, C) in the dtype of k.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["biwkv", "biwkv_reference", "numba_available", "IMPLS", "MODES"]

IMPLS = ("auto", "reference", "torch", "fused", "kernel_exact", "triton")
MODES = ("paper", "plain", "kernel")

# float32 is used by the torch path while 1.5*|w|*T + 2*ln(T) stays below this (exponent headroom: e^88).
_FP32_EXPONENT_BUDGET = 78.0


def _offset(mode: str) -> int:
    if mode == "paper":
        return 1
    if mode == "plain":
        return 0
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"k and v must both be (B, T, C); got {tuple(k.shape)} and {tuple(v.shape)}")
    c = k.shape[-1]
    if w.shape != (c,) or u.shape != (c,):
        raise ValueError(f"w and u must be ({c},); got {tuple(w.shape)} and {tuple(u.shape)}")


def _out_dtype(k: Tensor) -> torch.dtype:
    return k.dtype if k.dtype.is_floating_point else torch.float32


def _compute_dtype(*ts: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


# ----------------------------------------------------------------------------------------------------------
# Reference O(T^2)
# ----------------------------------------------------------------------------------------------------------


def biwkv_reference(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, *, mode: str = "paper", token_split: int = 32
) -> Tensor:
    """Dense float64 evaluation. k, v (B, T, C); w, u (C,) -> y (B, T, C) float64. Tests only (O(B C T^2))."""
    _check(w, u, k, v)
    w, u, k, v = (t.double() for t in (w, u, k, v))
    T = k.shape[1]
    idx = torch.arange(T, device=k.device, dtype=torch.float64)
    dist = idx[:, None] - idx[None, :]  # t - i, (T, T)
    eye = torch.eye(T, dtype=torch.bool, device=k.device)
    kk = k.permute(0, 2, 1)[:, :, None, :]  # (B, C, 1, T) indexed by i
    ww = w[None, :, None, None]
    if mode != "kernel":
        o = _offset(mode)
        logits = kk - ww * (dist.abs() - o)
        logits = torch.where(eye, u[None, :, None, None] + kk, logits)
        att = torch.softmax(logits, dim=-1)  # (B, C, T, T)
        y = torch.einsum("bcti,bci->bct", att, v.permute(0, 2, 1))
        return y.permute(0, 2, 1)
    # Closed form of the CUDA kernel (spec §2.3); the residual term is signed, so no softmax.
    L = -(-T // token_split)
    s = (idx // L) * L  # first token of t's chunk, (T,)
    t_ = idx[:, None]
    i_ = idx[None, :]
    kmax = k.amax(dim=1)[:, :, None, None]
    ek = torch.exp(kk - kmax)
    past_far = (i_ < s[:, None]).double() * torch.exp(-ww * dist)
    past_near = ((i_ >= s[:, None]) & (i_ < t_)).double() * torch.exp(-ww * (dist - 1))
    future = (i_ > t_).double() * torch.exp(ww * dist)
    resid = ((i_ > s[:, None]) & (i_ <= t_)).double() * (1 - torch.exp(ww)) * torch.exp(ww * dist)
    a = ek * (past_far + past_near + future + resid)
    a = a + eye * torch.exp(u[None, :, None, None] + kk - kmax)
    vv = v.permute(0, 2, 1)[:, :, None, :]
    y = (a * vv).sum(-1) / a.sum(-1)
    return y.permute(0, 2, 1)


# ----------------------------------------------------------------------------------------------------------
# O(T) PyTorch path (layout (B, C, T), time innermost)
# ----------------------------------------------------------------------------------------------------------


def _anchors(w: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """ep_t = exp(w (t - c)), en_t = exp(-w (t - c)) with c = (T-1)/2 to halve the exponent range. (C, T)."""
    pos = torch.arange(T, device=w.device, dtype=w.dtype) - (T - 1) / 2
    z = w[:, None] * pos[None, :]
    return torch.exp(z), torch.exp(-z)


def _past(x: Tensor, ep: Tensor, en: Tensor, inclusive: bool = False) -> Tensor:
    """sum_{i<t} (or i<=t) exp(-w (t-i)) x_i along the last axis. x (B, C, T)."""
    c = torch.cumsum(x * ep, dim=-1)
    if not inclusive:
        c = F.pad(c[..., :-1], (1, 0))
    return c * en


def _future(x: Tensor, ep: Tensor, en: Tensor, inclusive: bool = False) -> Tensor:
    """sum_{i>t} (or i>=t) exp(-w (i-t)) x_i along the last axis. x (B, C, T)."""
    c = torch.cumsum((x * en).flip(-1), dim=-1).flip(-1)
    if not inclusive:
        c = F.pad(c[..., 1:], (0, 1))
    return c * ep


def _torch_dtype_for(w: Tensor, T: int, base: torch.dtype) -> torch.dtype:
    if base == torch.float64:
        return base
    span = float(w.detach().abs().max()) * T if w.numel() else 0.0
    return torch.float32 if 1.5 * span + 2 * math.log(max(T, 2)) < _FP32_EXPONENT_BUDGET else torch.float64


def _torch_forward(w: Tensor, u0: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Offset-0 Bi-WKV with bonus u0. k, v (B, C, T) -> (y, D~), both (B, C, T); D~ = D exp(-max k)."""
    T = k.shape[-1]
    ep, en = _anchors(w, T)
    ek = torch.exp(k - k.amax(dim=-1, keepdim=True))
    a = ek * v
    diag = torch.exp(u0)[:, None] * ek
    num = diag * v + _past(a, ep, en) + _future(a, ep, en)
    den = diag + _past(ek, ep, en) + _future(ek, ep, en)
    return num / den, den


class _BiWKVTorch(torch.autograd.Function):
    """O(T) Bi-WKV with a recomputing backward (spec §2.4, §7.6)."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, u: Tensor, k: Tensor, v: Tensor, offset: int) -> Tensor:  # type: ignore[override]
        T = k.shape[1]
        cd = _torch_dtype_for(w, T, _compute_dtype(w, u, k, v))
        wc, uc = w.to(cd), u.to(cd)
        kc = k.to(cd).transpose(1, 2).contiguous()
        vc = v.to(cd).transpose(1, 2).contiguous()
        y, den = _torch_forward(wc, uc - offset * wc, kc, vc)
        ctx.save_for_backward(w, u, k, v, y, den)
        ctx.offset = offset
        return y.transpose(1, 2).to(_out_dtype(k))

    @staticmethod
    def backward(ctx: Any, gy: Tensor):  # type: ignore[override]
        w, u, k, v, y, den = ctx.saved_tensors
        cd = y.dtype
        wc, uc = w.to(cd), u.to(cd)
        u0 = uc - ctx.offset * wc
        kc = k.to(cd).transpose(1, 2)
        vc = v.to(cd).transpose(1, 2)
        T = kc.shape[-1]
        ep, en = _anchors(wc, T)
        ek = torch.exp(kc - kc.amax(dim=-1, keepdim=True))
        diag = torch.exp(u0)[:, None] * ek
        q = gy.to(cd).transpose(1, 2) / den
        qy = q * y
        qs = _past(q, ep, en) + _future(q, ep, en)
        rs = _past(qy, ep, en) + _future(qy, ep, en)
        dq = diag * q
        gv = dq + ek * qs
        gk = dq * (vc - y) + ek * (vc * qs - rs)
        gu0 = (dq * (vc - y)).sum(dim=(0, 2))
        gw0 = None
        if ctx.needs_input_grad[0]:
            # sum_{i != t} |t-i| exp(-w|t-i|) x_i = Past_incl(Past_excl(x)) + Future_incl(Future_excl(x))
            a = ek * vc
            wa = _past(_past(a, ep, en), ep, en, True) + _future(_future(a, ep, en), ep, en, True)
            wc_ = _past(_past(ek, ep, en), ep, en, True) + _future(_future(ek, ep, en), ep, en, True)
            gw0 = -(q * (wa - y * wc_)).sum(dim=(0, 2))
        gw = None if gw0 is None else (gw0 - ctx.offset * gu0).to(w.dtype)
        return (
            gw,
            gu0.to(u.dtype),
            gk.transpose(1, 2).to(k.dtype),
            gv.transpose(1, 2).to(v.dtype),
            None,
        )


# ----------------------------------------------------------------------------------------------------------
# Kernel-exact (spec §7.4), float64, autograd
# ----------------------------------------------------------------------------------------------------------


def _segment_cumsum(x: Tensor, L: int, inclusive: bool) -> Tensor:
    """Cumulative sum restarted every L steps along the last axis. x (B, C, T)."""
    T = x.shape[-1]
    n = -(-T // L)
    xp = F.pad(x, (0, n * L - T)).reshape(*x.shape[:-1], n, L)
    c = torch.cumsum(xp, dim=-1)
    if not inclusive:
        c = F.pad(c[..., :-1], (1, 0))
    return c.reshape(*x.shape[:-1], n * L)[..., :T]


def _kernel_exact(w: Tensor, u: Tensor, k: Tensor, v: Tensor, token_split: int) -> Tensor:
    """What the official CUDA kernel computes (ε ignored). k, v (B, T, C) -> y (B, T, C) float64."""
    wd, ud = w.double(), u.double()
    kd = k.double().transpose(1, 2)
    vd = v.double().transpose(1, 2)
    T = kd.shape[-1]
    L = -(-T // token_split)
    ep, en = _anchors(wd, T)
    ek = torch.exp(kd - kd.amax(dim=-1, keepdim=True).detach())
    first = torch.zeros(T, dtype=torch.bool, device=k.device)
    first[::L] = True
    n = -(-T // L)
    ew = torch.exp(wd)[:, None]

    def part(x: Tensor) -> Tensor:
        xp = x * ep  # anchored for past sums
        # X: exclusive prefix read at the chunk start = sum of whole earlier chunks.
        tot = F.pad(xp, (0, n * L - T)).reshape(*x.shape[:-1], n, L).sum(-1)
        before = F.pad(torch.cumsum(tot, dim=-1)[..., :-1], (1, 0))
        X = before.repeat_interleave(L, dim=-1)[..., :T]
        Y = _segment_cumsum(xp, L, inclusive=False)
        past = en * X + en * ew * Y  # e^{-w t} X + e^{-w (t-1)} Y
        fut = _future(x, ep, en)
        R = _segment_cumsum(torch.where(first, torch.zeros_like(x), x * en), L, inclusive=True)
        return past + fut + (1 - ew) * ep * R

    diag = torch.exp(ud)[:, None] * ek
    num = diag * vd + part(ek * vd)
    den = diag + part(ek)
    return (num / den).transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------
# Fused CPU (Numba) and GPU (Triton) glue
# ----------------------------------------------------------------------------------------------------------

_NUMBA_STATE: dict[str, Any] = {"mod": None, "failed": False}


def numba_available() -> bool:
    """True when the Numba kernel module imports (compilation happens on first use)."""
    return _load_numba() is not None


def _load_numba():
    if _NUMBA_STATE["mod"] is None and not _NUMBA_STATE["failed"]:
        try:
            import numba

            # Numba's OpenMP layer shares libgomp's global thread count with PyTorch: its first parallel
            # call would silently change torch.get_num_threads(), and with it the bits of every later CPU
            # convolution (encoder and decoder must agree bit-exactly). The workqueue layer is separate.
            if numba.config.THREADING_LAYER == "default":
                numba.config.THREADING_LAYER = "workqueue"
            from hpcm.ops import _biwkv_numba

            _NUMBA_STATE["mod"] = _biwkv_numba
        except Exception:  # ImportError, or numba failing to initialise
            _NUMBA_STATE["failed"] = True
    return _NUMBA_STATE["mod"]


def _triton_usable(k: Tensor) -> bool:
    """CUDA tensors with an importable triton; CPU tensors only under the Triton interpreter (tests)."""
    if k.device.type not in ("cuda", "cpu"):
        return False
    try:
        from hpcm.ops import _biwkv_triton
    except Exception:  # ImportError, or triton failing to initialise
        return False
    if k.is_cuda:
        return _biwkv_triton.available()
    return _biwkv_triton.interpreted()


def _fused(w: Tensor, u: Tensor, k: Tensor, v: Tensor, offset: int) -> Tensor:
    mod = _load_numba()
    if mod is None:
        raise RuntimeError("impl='fused' needs numba, which failed to import")
    return mod.BiWKVFused.apply(w, u, k, v, offset)


# ----------------------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------------------


def biwkv(
    w: Tensor,
    u: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    impl: str = "auto",
    mode: str = "paper",
    token_split: int = 32,
) -> Tensor:
    """Bi-WKV. k, v (B, T, C); w, u (C,) per-token decay and bonus (already divided by T) -> y (B, T, C).

    mode: ``"paper"`` (published formula, offset 1; default), ``"plain"`` (offset 0) or ``"kernel"``
    (what the official CUDA kernel computes, with ``token_split`` chunks: 32 for LALIC HEAD / Vision-RWKV,
    64 for the first LALIC kernel). impl: one of ``IMPLS`` (see the module docstring); ``"kernel_exact"``
    implies ``mode="kernel"``. fp16/bf16 inputs are computed in float32 and returned in their dtype.
    """
    _check(w, u, k, v)
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if impl == "kernel_exact":
        mode = "kernel"
    out_dtype = _out_dtype(k)
    if k.shape[1] == 0:
        return torch.empty_like(k, dtype=out_dtype)
    if impl == "reference":
        return biwkv_reference(w, u, k, v, mode=mode, token_split=token_split).to(out_dtype)
    if mode == "kernel":
        if impl not in ("auto", "torch", "kernel_exact"):
            raise ValueError(f"mode='kernel' is implemented by impl='kernel_exact' only, not {impl!r}")
        return _kernel_exact(w, u, k, v, token_split).to(out_dtype)
    offset = _offset(mode)
    if impl == "auto":
        if k.device.type == "cpu" and _load_numba() is not None:
            impl = "fused"
        else:
            impl = "torch"
        if impl == "fused":
            try:
                return _fused(w, u, k, v, offset)
            except Exception as exc:  # compilation failure: remember it and fall back
                _NUMBA_STATE["failed"], _NUMBA_STATE["mod"] = True, None
                warnings.warn(f"fused Bi-WKV kernel unavailable ({exc}); using PyTorch", stacklevel=2)
                impl = "torch"
    if impl == "torch":
        return _BiWKVTorch.apply(w, u, k, v, offset)
    if impl == "fused":
        if k.device.type != "cpu":
            raise ValueError("impl='fused' runs on CPU tensors only")
        return _fused(w, u, k, v, offset)
    if impl == "triton":
        if not _triton_usable(k):
            raise RuntimeError(
                "impl='triton' needs CUDA tensors and an importable triton "
                "(CPU tensors only under TRITON_INTERPRET=1)"
            )
        from hpcm.ops import _biwkv_triton

        return _biwkv_triton.BiWKVTriton.apply(w, u, k, v, offset)
    raise AssertionError(impl)
