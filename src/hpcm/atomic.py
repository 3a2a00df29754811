"""Atomic file output, the one helper of every writer (codec files, images, weights, checkpoints, results).

A file either appears complete or not at all.

Data goes to a temporary file in the destination directory, is flushed and fsync'ed, and is then
moved into place. Without ``overwrite`` the final step is a hard link (``os.link``), which fails
if the destination already exists, so an existing file is never clobbered even in a race.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from hpcm.errors import HPCMError


class OutputExistsError(HPCMError):
    """The output file exists and overwriting was not requested."""


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse an output path that is not (or would not replace) a regular file.

    Devices, FIFOs, sockets and directories are refused even with ``overwrite`` (``-o /dev/null --force``
    must not replace ``/dev/null``). An existing regular file or symbolic link is refused unless
    ``overwrite``; with it, a symbolic link is itself replaced by a regular file and its target is left
    untouched. Raises :class:`OutputExistsError` or ``HPCMError``.
    """
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise HPCMError(f"cannot use {path} as output: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise HPCMError(f"{path} is a directory; give a file name as output")
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise HPCMError(f"{path} is not a regular file (a device, FIFO or socket); refused as output")
    if not overwrite:
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a file"
        raise OutputExistsError(f"{path} already exists ({what}; use --force to overwrite)")


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory`` (best effort: not every platform allows opening a dir)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _target_mode(path: Path) -> int:
    """Permission bits for the new file: the replaced file's, else 0o666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to replace an existing file unless ``overwrite``.

    Raises :class:`OutputExistsError` (an ``HPCMError``) when ``path`` exists and ``overwrite`` is
    false, and ``HPCMError`` when the directory cannot be written or ``path`` is not a regular file
    (see :func:`check_output_path`; a symbolic link is replaced by a regular file, its target untouched).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    check_output_path(path, overwrite=overwrite)
    if not directory.is_dir():
        raise HPCMError(f"output directory {directory} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise HPCMError(f"cannot write to {directory}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _target_mode(path))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise OutputExistsError(f"{path} already exists (use --force to overwrite)") from exc
            except OSError:
                # File systems without hard links: fall back to a checked rename.
                if path.exists():
                    raise OutputExistsError(f"{path} already exists (use --force to overwrite)") from None
                os.replace(tmp, path)
    except OSError as exc:
        raise HPCMError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(directory)
    return path
