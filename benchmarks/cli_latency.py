"""What a user waits for: wall time of one ``hpcm compress`` / ``hpcm decompress`` call, side by side with
the floor every call pays (starting Python and importing torch), in fresh processes.

Prints the median of ``--repeat`` runs for: ``python -c "import torch"``, ``hpcm compress IMAGE`` (the
default model) and ``hpcm decompress``, and the call's share above the torch floor. Bytecode of the
package is compiled first (as pip does on install); with ``PYTHONDONTWRITEBYTECODE`` set and no
``__pycache__`` every call would also recompile ≈ 35 modules (≈ 0.15 s).

Target (issue 17): compress of a 768x512 Kodak image with the default model ≤ 1.5 s wall on the 2-core
development machine, idle. Wall times inflate with load: the load average is printed.

Run: ``.venv/bin/python benchmarks/cli_latency.py [--image PATH] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png"


def _wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    compileall.compile_dir(str(ROOT / "src" / "hpcm"), quiet=1)
    hpcm = [sys.executable, "-m", "hpcm"]
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.1f} on {os.cpu_count()} CPUs; image {args.image.name}")
    with tempfile.TemporaryDirectory() as tmp:
        coded, decoded = Path(tmp) / "a.hpcm", Path(tmp) / "a.png"
        floor = _wall([sys.executable, "-c", "import torch"], args.repeat)
        enc = _wall([*hpcm, "compress", str(args.image), "-o", str(coded), "--force"], args.repeat)
        dec = _wall([*hpcm, "decompress", str(coded), "-o", str(decoded), "--force"], args.repeat)
    print(f"{'python -c import torch':24s} {floor:6.2f} s")
    for name, wall in (("hpcm compress", enc), ("hpcm decompress", dec)):
        print(f"{name:24s} {wall:6.2f} s  ({wall - floor:+.2f} s above the torch floor, {wall / floor:.2f}x)")
    print(f"target: compress <= 1.50 s -> {'met' if enc <= 1.5 else 'NOT met'} (median of {args.repeat})")


if __name__ == "__main__":
    main()
