"""Exceptions raised by hpcm. Every user-facing failure is an :class:`HPCMError`."""


class HPCMError(Exception):
    """Base class of every error hpcm raises on purpose (the CLI prints it in one line)."""


class FormatError(HPCMError):
    """A ``.hpcm`` file is malformed: wrong magic, unknown version, truncated, checksum mismatch."""


class ModelMismatchError(HPCMError):
    """A file was written by a different model (preset, quality or weights) than the one given."""


class ImageError(HPCMError):
    """An input image cannot be read or has an unsupported mode / size."""


class CheckpointError(HPCMError):
    """A checkpoint or weights file cannot be loaded into the requested model."""
