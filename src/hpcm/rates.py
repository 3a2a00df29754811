"""Rate-distortion trade-offs λ, declared once: the fixed-rate qualities and the variable-rate anchors.

HPCM's six rate points (hpcm.md §8.2): quality q in 1..6 trains with ``MSE_LAMBDAS[q - 1]`` (MSE
distortion) or ``MS_SSIM_LAMBDAS[q - 1]`` (1 - MS-SSIM). ``VR_LAMBDAS`` are the anchors of the
variable-rate presets (quality 1..8): the six MSE points and two above them, continuing the ×1.93
progression, for high quality.
"""

from __future__ import annotations

MSE_LAMBDAS: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483)
MS_SSIM_LAMBDAS: tuple[float, ...] = (2.4, 4.58, 8.73, 16.64, 31.73, 60.5)
VR_LAMBDAS: tuple[float, ...] = (*MSE_LAMBDAS, 0.0932, 0.18)
LAMBDAS: dict[str, tuple[float, ...]] = {"mse": MSE_LAMBDAS, "ms-ssim": MS_SSIM_LAMBDAS}
METRICS = tuple(LAMBDAS)


def lambda_for(quality: int, metric: str = "mse") -> float:
    """HPCM's λ for quality 1..6 of the given metric."""
    table = LAMBDAS.get(metric)
    if table is None:
        raise ValueError(f"unknown metric {metric!r} (expected one of {METRICS})")
    if not 1 <= quality <= len(table):
        raise ValueError(f"quality must be 1..{len(table)}, got {quality}")
    return table[quality - 1]
