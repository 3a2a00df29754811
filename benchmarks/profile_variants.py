"""Profile every registered ``*-tiny`` preset (hpcm.list_models) at 256 and 512 and print one table.

Usage: ``.venv/bin/python benchmarks/profile_variants.py [--sizes 256,512] [--repeat 3] [--no-codec]
[-o DIR] [--device cpu]`` — a thin wrapper over ``hpcm profile`` (see docs/measurement.md).
"""

from __future__ import annotations

import argparse
import sys

import hpcm
from hpcm.eval.profile import markdown_table, parse_sizes, profile_model, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-codec", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--suffix", default="-tiny", help="profile presets whose name ends with this")
    parser.add_argument("-o", "--output", help="also write profile.json / profile.md / latency.png here")
    args = parser.parse_args(argv)

    names = [n for n in hpcm.list_models() if n.endswith(args.suffix)]
    sizes = parse_sizes(args.sizes)
    rows = []
    for name in names:
        print(f"profiling {name} …", file=sys.stderr, flush=True)
        rows += profile_model(name, sizes, device=args.device, repeat=args.repeat, codec=not args.no_codec,
                              log=lambda line: print("  " + line, file=sys.stderr, flush=True))
    print(markdown_table(rows))
    if args.output:
        write_report(rows, args.output, device=args.device, repeat=args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
