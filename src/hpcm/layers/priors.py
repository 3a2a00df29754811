"""Official HPCM spatial prior (spec hpcm.md §4.8)."""

from __future__ import annotations

import torch
from torch import nn

from hpcm.layers.conv import DWConvRB, conv1x1


class SpatialPrior(nn.Module):
    """``psi = branch_2(branch_1(x) * quant_step)``.

    ``branch_1`` is ``d1`` DWConvRB(in_dim); ``branch_2`` is ``d2`` DWConvRB(in_dim) then a 1x1 conv
    in_dim -> out_dim. x (B, in_dim, h, w), quant_step (1, in_dim, 1, 1) -> psi (B, out_dim, h, w).
    """

    def __init__(self, in_dim: int, out_dim: int, depths: tuple[int, int] = (2, 1)) -> None:
        super().__init__()
        d1, d2 = (int(d) for d in depths)
        self.branch_1 = nn.Sequential(*[DWConvRB(in_dim) for _ in range(d1)])
        self.branch_2 = nn.Sequential(*[DWConvRB(in_dim) for _ in range(d2)], conv1x1(in_dim, out_dim))

    def forward(self, x: torch.Tensor, quant_step: torch.Tensor) -> torch.Tensor:
        return self.branch_2(self.branch_1(x) * quant_step)
