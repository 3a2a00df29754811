"""The ``hpcm`` command line. Sub-commands live in sibling modules, each exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hpcm.errors import HPCMError
from hpcm.threads import passive_openmp_waits

# Each module defines register(subparsers) which adds its sub-commands; a sub-command sets
# ``func=callable(args) -> int`` with ``parser.set_defaults`` (and ``fast_exit=True`` where the process may
# end without the interpreter's teardown, see _exit_now).
COMMAND_MODULES = (
    "hpcm.cli.codec",  # compress, decompress, info, demo
    "hpcm.cli.describe",  # describe, models
    "hpcm.cli.train",  # train, export
    "hpcm.cli.measure",  # eval, bench-codec, plot, bdrate, profile
    "hpcm.cli.compare",  # compare
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpcm",
        description="Learned image compression with HPCM and its RWKV / multi-reference variants.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command family is not installed in this build
                continue
            raise
        module.register(sub)
    return parser


#: Exit status when the reader of stdout went away (128 + SIGPIPE, what a shell reports for ``cmd | head``).
EXIT_BROKEN_PIPE = 141


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it again at exit raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _exit_now(rc: int) -> None:
    """End the process without the interpreter's teardown.

    Tearing down torch's module graph takes 0.4-1.4 s, longer than coding a Kodak image; a command
    that has written and flushed everything has nothing left to clean up. Only commands that set
    ``fast_exit`` (no worker processes, no atexit work), and only when ``main`` owns the process
    (``argv`` taken from the command line), end this way.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


def main(argv: list[str] | None = None) -> int:
    passive_openmp_waits()  # before torch loads: idle OpenMP threads sleep instead of spinning
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        try:
            rc = int(args.func(args) or 0)
        except HPCMError as exc:
            print(f"hpcm: error: {exc}", file=sys.stderr)
            rc = 1
        except KeyboardInterrupt:
            print("hpcm: interrupted", file=sys.stderr)
            rc = 130
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        if argv is None and getattr(args, "fast_exit", False):
            _exit_now(rc)
        return rc
    except BrokenPipeError:  # e.g. `hpcm models | head -1`: the reader closed the pipe; end quietly
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
