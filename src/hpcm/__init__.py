"""hpcm: learned image compression with HPCM and its RWKV / multi-reference variants."""

__version__ = "0.1.0"
