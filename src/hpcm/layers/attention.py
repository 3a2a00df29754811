"""Windowed cross-attention cell of HPCM: progressive context fusion (spec hpcm.md §4.7)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttentionCell(nn.Module):
    """``new_C = WindowAttention(Q=conv_q(psi), K=conv_k(C), V=conv_v(C)) + conv_out(psi)``.

    Attention runs inside non-overlapping ``window_size`` x ``window_size`` windows, with ``num_heads``
    heads that own contiguous channel blocks, softmax over the keys and logits scaled by
    1/sqrt(head_dim). Grids that are not divisible by the window are zero-padded at the bottom/right;
    padded keys are excluded from the softmax and padded queries are cropped, so on divisible grids the
    result is the official one.

    psi (x_t): (B, input_dim, H, W); prev (h_prev): (B, hidden_dim, H, W) -> (B, hidden_dim, H, W).
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, window_size: int, kernel_size: int = 1, num_heads: int = 32
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} not divisible by num_heads {num_heads}")
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.window_size = int(window_size)
        self.num_heads = int(num_heads)
        self.head_dim = hidden_dim // num_heads
        pad = kernel_size // 2
        self.conv_q = nn.Conv2d(input_dim, hidden_dim, kernel_size, padding=pad)
        self.conv_k = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad)
        self.conv_v = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad)
        self.conv_out = nn.Conv2d(input_dim, hidden_dim, kernel_size, padding=pad)

    def _to_windows(self, t: torch.Tensor) -> torch.Tensor:
        """(B, hidden, Hp, Wp) -> (B, nh, nw, heads, ws*ws, head_dim)."""
        b, _, hp, wp = t.shape
        ws = self.window_size
        t = t.view(b, self.num_heads, self.head_dim, hp // ws, ws, wp // ws, ws)
        return t.permute(0, 3, 5, 1, 4, 6, 2).reshape(b, hp // ws, wp // ws, self.num_heads, ws * ws, -1)

    def forward(self, x_t: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x_t.shape
        ws = self.window_size
        q = self.conv_q(x_t)
        k = self.conv_k(h_prev)
        v = self.conv_v(h_prev)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        key_mask = None
        if pad_h or pad_w:
            q, k, v = (F.pad(t, (0, pad_w, 0, pad_h)) for t in (q, k, v))
            hp, wp = h + pad_h, w + pad_w
            valid = torch.zeros(hp, wp, dtype=torch.bool, device=x_t.device)
            valid[:h, :w] = True
            # (1, nh, nw, 1, 1, ws*ws): True where the key position lies inside the real grid
            valid = valid.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3)
            key_mask = valid.reshape(1, hp // ws, wp // ws, 1, 1, ws * ws)
        hp, wp = h + pad_h, w + pad_w
        qw, kw, vw = self._to_windows(q), self._to_windows(k), self._to_windows(v)
        logits = torch.matmul(qw, kw.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask, float("-inf"))
        attn = torch.softmax(logits, dim=-1)
        out = torch.matmul(attn, vw)  # (B, nh, nw, heads, ws*ws, head_dim)
        out = out.view(b, hp // ws, wp // ws, self.num_heads, ws, ws, self.head_dim)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, self.hidden_dim, hp, wp)
        if pad_h or pad_w:
            out = out[:, :, :h, :w]
        return out + self.conv_out(x_t)
