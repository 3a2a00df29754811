"""The ``hpcm`` command line. Sub-commands live in sibling modules, each exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from hpcm.errors import HPCMError

# Each module defines register(subparsers) which adds its sub-commands; a sub-command sets
# ``func=callable(args) -> int`` with ``parser.set_defaults``.
COMMAND_MODULES = (
    "hpcm.cli.codec",  # compress, decompress, info, demo
    "hpcm.cli.describe",  # describe, models
    "hpcm.cli.train",  # train, export
    "hpcm.cli.measure",  # eval, bench-codec, plot, bdrate, profile
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HPCMError as exc:
        print(f"hpcm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hpcm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
