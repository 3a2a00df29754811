"""hpcm.codec: the ``.hpcm`` container, image I/O, padding/cropping and atomic writes.

``compress_image(model, image) -> bytes`` and ``decompress_image(data, model) -> image`` are the
entry points; ``read_header(data)`` inspects a file without a model; ``encode_to_target(model, image,
RateTarget(max_bytes=...))`` finds the quality that meets a size or PSNR target.

The names are re-exported lazily: ``import hpcm.codec.container`` (headers, limits) does not load torch.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Header", "RateTarget", "compress_image", "decode", "decompress_image", "encode", "encode_to_target",
    "model_for_header", "model_identity", "read_header",
]

_FROM_API = ("compress_image", "decode", "decompress_image", "encode", "model_for_header", "model_identity")


def __getattr__(name: str) -> Any:
    if name in _FROM_API:
        from hpcm.codec import api

        return getattr(api, name)
    if name in ("RateTarget", "encode_to_target"):
        from hpcm.codec import rate_control

        return getattr(rate_control, name)
    if name in ("Header", "read_header"):
        from hpcm.codec import container

        return getattr(container, name)
    raise AttributeError(f"module 'hpcm.codec' has no attribute {name!r}")
