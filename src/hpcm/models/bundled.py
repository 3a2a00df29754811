"""Which trained weights ship inside the package (``hpcm/weights/<preset>-q<Q>.safetensors``).

Torch-free, so that ``hpcm models`` and argument checks answer without loading torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "hpcm-small-vr"  # the codec's default: the variable-rate preset whose weights ship here


def qualities(preset: str, weights_dir: Path | None = None) -> list[int]:
    """Qualities of the shipped trained weights of ``preset`` (in ``weights_dir``, default the package's)."""
    folder = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    found = []
    for p in folder.glob(f"{preset}-q*.safetensors") if folder.is_dir() else ():
        m = re.fullmatch(re.escape(preset) + r"-q(\d+)\.safetensors", p.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


def variable_rate_shipped(preset: str, weights_dir: Path | None = None) -> bool:
    """True when one weights file for every quality ships for ``preset`` (``<preset>.safetensors``)."""
    folder = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    return (folder / f"{preset}.safetensors").is_file()


def notes(preset: str, weights_dir: Path | None = None) -> list[str]:
    """The distinct ``note`` texts of ``preset``'s shipped weights (from their JSON sidecars)."""
    folder = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    found: list[str] = []
    sidecars = [f"{preset}-q{q}.json" for q in qualities(preset, folder)]
    if variable_rate_shipped(preset, folder):
        sidecars.append(f"{preset}.json")
    for name in sidecars:
        try:
            text = json.loads((folder / name).read_text()).get("note")
        except (OSError, ValueError, AttributeError):
            continue
        if text and text not in found:
            found.append(text)
    return found
