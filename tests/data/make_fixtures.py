"""Write the .hpcm fixture files of tests/test_format_fixtures.py (run once per format version).

``python tests/data/make_fixtures.py 2`` wrote the version-2 files with the code of commit 0965277 (the last
commit that wrote v2 by default; later code writes version 2 only on request, ``encode(...,
format_version=2)``); ``... 3`` wrote the version-3 files with the code that introduced format 3, ``... 4``
the version-4 files with the code that introduced format 4, ``... 5`` the version-5 files with the code that
introduced format 5 (small files: their μ band is the narrowest, e = 0). Running it again reproduces
the layout, not necessarily the bytes, so the stored files are never regenerated.
The image is synthetic (``fixture_image``), so no test image is stored in the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: (preset, quality) of each fixture; quality None: the preset's default shipped weights
CASES = (("hpcm-tiny", 3, None), ("hpcm-tiny-vr", None, 2.5))


def fixture_image(h: int = 72, w: int = 112) -> np.ndarray:
    """A deterministic test image: gradients, a disc, stripes and mild noise (uint8, H x W x 3)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 120 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    g = 60 + 1.5 * xx + 0.8 * yy
    b = np.where((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (h / 4) ** 2, 220.0, 40 + 30 * ((xx // 6) % 2))
    noise = np.random.default_rng(16).normal(0, 6, (h, w, 3))
    img = np.stack([r, g, b], axis=-1) + noise
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def fixture_name(version: int, preset: str, quality: int | None, vr_quality: float | None) -> str:
    q = f"q{quality}" if quality is not None else f"vq{vr_quality:g}"
    return f"v{version}-{preset}-{q}.hpcm"


def main(version: int) -> None:
    from hpcm.codec.api import encode
    from hpcm.models.io import load_model

    image = fixture_image()
    for preset, quality, vr_quality in CASES:
        model = load_model(preset, quality=quality)
        kw = {} if vr_quality is None else {"quality": vr_quality}
        data, _, _ = encode(model, image, verify=True, format_version=version, **kw)
        path = HERE / fixture_name(version, preset, quality, vr_quality)
        path.write_bytes(data)
        print(path.name, len(data), "bytes")


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    main(int(sys.argv[1]))
