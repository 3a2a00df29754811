"""hpcm.codec: the ``.hpcm`` container, image I/O, padding/cropping and atomic writes.

``compress_image(model, image) -> bytes`` and ``decompress_image(data, model) -> image`` are the
entry points; ``read_header(data)`` inspects a file without a model.
"""

from hpcm.codec.api import compress_image, decode, decompress_image, encode, model_identity
from hpcm.codec.container import Header, read_header

__all__ = [
    "Header", "compress_image", "decode", "decompress_image", "encode", "model_identity", "read_header",
]
