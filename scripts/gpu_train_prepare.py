"""Prepare the training data a GPU slot carries (issue 18 item 3): a compact, seeded set of JPEG crops.

Writes, under the ignored folder ``.gpu/`` of this checkout:

- ``.gpu/train-crops/NNNNN.jpg``: random ``--crop``² crops (default 288², so that ``hpcm train
  --patch-size 256`` still draws a random 256² window and flips) of the *training* images of ``--data``
  (default ``../shared/data/train``; Kodak is refused). The 16 images that ``hpcm train --val-holdout 16``
  holds out are excluded: the list is ``find_images(--data)`` in the trainer's order and
  ``split_holdout`` of it, so the split is the trainer's. Crops go round the training images in a seeded
  order (one crop per image per pass, a new order each pass), so the first N crops come from N different
  images. As in the CPU recipe (``--downscale-prob 0.5``), with probability ``--downscale-prob`` an image
  is first down-scaled by a factor in ``[max(--downscale-min, crop/shorter side), 1]``; images smaller
  than the crop are up-scaled like the trainer does. Crop offsets are even, and each crop is saved as JPEG
  ``--quality`` (default 92, optimised Huffman tables) with its source's chroma subsampling (4:2:0 sources
  stay 4:2:0, 4:4:4 stay 4:4:4), so re-encoding costs as little as it can.
- ``.gpu/holdout/``: the 16 held-out images, byte-identical copies (named ``NN-<folder>-<file>``), so the
  GPU run validates on exactly the images that the CPU runs' ``--val-holdout 16`` uses. An image with a
  side above ``--holdout-max-side`` would be down-scaled (Lanczos, PNG); none is today (at most 640 px).
- ``.gpu/train-crops.json``: the manifest (settings, commit, held-out files, and per crop its source,
  scale and offset).

Crop count: every crop is a pure function of ``(--seed, its index)``, so any count gives a prefix of the
same sequence. ``--count auto`` (the default) fills the 64 MiB that a ``run`` call carries: it adds crops
while tracked files + untracked, not ignored files + everything in ``.gpu`` (wheels, holdout, crops, and
whatever else is there) + ``--margin-mib`` stay under ``--budget-mib``, up to ``--max-count``.

    python scripts/gpu_train_prepare.py                 # after scripts/gpu_wheels.sh; prints the sizes
    python scripts/gpu_train_prepare.py --count 300     # a fixed count
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, JpegImagePlugin

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def git_bytes(repo: Path) -> tuple[int, int]:
    """(bytes of tracked files, bytes of untracked files that git does not ignore): what always travels."""

    def total(args: list[str]) -> int:
        res = subprocess.run(["git", *args, "-z"], cwd=repo, capture_output=True, check=True)
        names = [n for n in res.stdout.decode().split("\0") if n]
        return sum((repo / n).stat().st_size for n in names if (repo / n).is_file())

    return total(["ls-files", "--cached"]), total(["ls-files", "--others", "--exclude-standard"])


def head_commit(repo: Path) -> str | None:
    """The checkout's commit, recorded in the manifests (None outside git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def jpeg_sampling(img: Image.Image) -> int:
    """Pillow's ``subsampling`` value of a JPEG source (0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0); 0 otherwise."""
    if isinstance(img, JpegImagePlugin.JpegImageFile):
        s = JpegImagePlugin.get_sampling(img)
        return s if s in (0, 1, 2) else 0
    return 0


def make_crop(
    path: Path, crop: int, rng: np.random.Generator, downscale_prob: float, downscale_min: float
) -> tuple[Image.Image, int, float, int, int]:
    """(crop image, subsampling, scale, left, top) of one image; the choices come from ``rng``."""
    with Image.open(path) as src:
        sampling = jpeg_sampling(src)
        img = src.convert("RGB")
    w, h = img.size
    short = min(w, h)
    scale = 1.0
    if short < crop:  # like the trainer: up-scale so that the shorter side equals the crop
        scale = crop / short
        img = img.resize((max(crop, -(-w * crop // short)), max(crop, -(-h * crop // short))), Image.BICUBIC)
    elif downscale_prob > 0 and rng.random() < downscale_prob:
        scale = float(rng.uniform(max(downscale_min, crop / short), 1.0))
        size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
        if size != (w, h):
            img = img.resize(size, Image.BICUBIC, reducing_gap=3.0)
    w, h = img.size
    left = 2 * int(rng.integers(0, (w - crop) // 2 + 1))  # even: the chroma grid of 4:2:0 sources stays put
    top = 2 * int(rng.integers(0, (h - crop) // 2 + 1))
    return img.crop((left, top, left + crop, top + crop)), sampling, scale, left, top


def save_jpeg(img: Image.Image, path: Path, quality: int, subsampling: int) -> None:
    """JPEG with optimised Huffman tables. Pillow then encodes in one buffer of only width x height bytes
    below q95, too small for detailed 4:4:4 crops ("Suspension not allowed here"): raise its floor."""
    old = ImageFile.MAXBLOCK
    ImageFile.MAXBLOCK = max(old, 3 * img.width * img.height + 65536)
    try:
        img.save(path, "JPEG", quality=quality, subsampling=subsampling, optimize=True)
    finally:
        ImageFile.MAXBLOCK = old


def holdout_name(index: int, path: Path, data_root: Path) -> str:
    try:
        rel = path.relative_to(data_root)
    except ValueError:
        rel = Path(path.name)
    parts = rel.parts[:1] + rel.parts[-1:] if len(rel.parts) > 1 else rel.parts
    return f"{index:02d}-" + "-".join(parts)


def write_crops(train_paths: list[Path], crops_dir: Path, *, start: int, count: int | None, max_count: int,
                byte_budget: int | None, crop: int, quality: int, seed: int, downscale_prob: float,
                downscale_min: float) -> tuple[list[list], int]:
    """Crops ``start``, ``start + 1``, ... of the seeded sequence into ``crops_dir`` (``count`` of them, or
    while their bytes stay within ``byte_budget``, at most ``max_count``); (manifest entries, bytes)."""
    from hpcm.train.data import mix_seed

    limit = count if count is not None else max_count
    n = len(train_paths)
    entries, written = [], 0
    for i in range(start, start + limit):
        epoch, offset = divmod(i, n)
        order = _epoch_order(seed, epoch, n)
        src = train_paths[order[offset]]
        rng = np.random.default_rng(mix_seed(seed, 0xC20B, i))
        img, sampling, scale, left, top = make_crop(src, crop, rng, downscale_prob, downscale_min)
        target = crops_dir / f"{i:05d}.jpg"
        save_jpeg(img, target, quality, sampling)
        size = target.stat().st_size
        if count is None and written + size > byte_budget:
            target.unlink()
            break
        written += size
        entries.append([str(src), round(scale, 4), left, top, sampling])
    return entries, written


_ORDERS: dict[tuple[int, int, int], list[int]] = {}


def _epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The seeded order in which pass ``epoch`` visits the ``n`` training images (one crop each)."""
    from hpcm.train.data import mix_seed

    key = (seed, epoch, n)
    if key not in _ORDERS:
        _ORDERS[key] = np.random.default_rng(mix_seed(seed, 0xC209, epoch)).permutation(n).tolist()
    return _ORDERS[key]


def prepare_part(data: list[Path], out: Path, part: int, byte_budget: int, *, count: int | None = None,
                 max_count: int = 2500, commit: str | None = None) -> dict:
    """An extra crop set ``out/crops-part{part}`` for a warm GPU machine: the next crops of the sequence
    after the main set and every existing part, with the main set's settings (read from its manifest).

    A warm machine keeps the ignored files earlier calls brought, so calls that each carry only one part
    (``carry=[".gpu/crops-partK"]``) add data a single 64 MiB call cannot; gpu_train.sh trains on every
    ``.gpu/crops-part*`` it finds (docs/gpu.md)."""
    from hpcm.train.data import find_images
    from hpcm.train.trainer import split_holdout

    main = json.loads((out / "train-crops.json").read_text())
    if [str(d) for d in data] != main["data"]:
        raise SystemExit(f"gpu_train_prepare: --data {data} is not the main set's {main['data']}")
    ends = [main["count"]]
    for m in out.glob("crops-part*/manifest.json"):
        if m.parent.name != f"crops-part{part}":
            doc = json.loads(m.read_text())
            ends.append(doc["start"] + doc["count"])
    part_dir = out / f"crops-part{part}"
    own = part_dir / "manifest.json"  # a redone part keeps its start
    start = json.loads(own.read_text())["start"] if own.is_file() else max(ends)
    train_paths, _ = split_holdout(find_images(data), len(main["holdout"]))
    if part_dir.exists():
        shutil.rmtree(part_dir)
    part_dir.mkdir(parents=True)
    entries, written = write_crops(train_paths, part_dir, start=start, count=count, max_count=max_count,
                                   byte_budget=byte_budget, crop=main["crop"], quality=main["jpeg_quality"],
                                   seed=main["seed"], downscale_prob=main["downscale_prob"],
                                   downscale_min=main["downscale_min"])
    doc = {"what": f"extra training crops, part {part} (scripts/gpu_train_prepare.py --part)", "part": part,
           "start": start, "count": len(entries), "crop_bytes": written, "commit": commit,
           "distinct_sources": len({e[0] for e in entries}), "crop_fields": main["crop_fields"],
           "crops": entries}
    (part_dir / "manifest.json").write_text(json.dumps(doc))
    return doc


def prepare(
    data: list[Path],
    out: Path,
    *,
    holdout: int = 16,
    crop: int = 288,
    quality: int = 92,
    seed: int = 0,
    count: int | None = None,
    max_count: int = 2500,
    byte_budget: int | None = None,
    downscale_prob: float = 0.5,
    downscale_min: float = 0.5,
    holdout_max_side: int = 1024,
    commit: str | None = None,
) -> dict:
    """Write ``out/train-crops``, ``out/holdout`` and ``out/train-crops.json``; returns the manifest.

    ``count``: that many crops; None: add crops while the bytes written (crops) stay within
    ``byte_budget``, at most ``max_count``.
    """
    from hpcm.train.data import find_images
    from hpcm.train.trainer import split_holdout

    for d in data:
        if "kodak" in str(Path(d).resolve()).lower():
            raise SystemExit(f"gpu_train_prepare: {d} looks like Kodak, the test set: never train on it")
    if count is None and byte_budget is None:
        raise ValueError("give count or byte_budget")
    paths = find_images(data)  # the trainer's list and order (hpcm train --data DIR ...)
    train_paths, held = split_holdout(paths, holdout)
    data_root = Path(data[0]) if len(data) == 1 else Path("/")

    crops_dir, hold_dir = out / "train-crops", out / "holdout"
    for d in (crops_dir, hold_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)

    held_entries = []
    for i, p in enumerate(held):
        name = holdout_name(i, p, data_root)
        with Image.open(p) as im:
            big = max(im.size) > holdout_max_side
            if big:
                s = holdout_max_side / max(im.size)
                small = im.convert("RGB").resize((round(im.width * s), round(im.height * s)), Image.LANCZOS)
                name = str(Path(name).with_suffix(".png"))
                small.save(hold_dir / name)
        if not big:
            shutil.copyfile(p, hold_dir / name)
        held_entries.append({"file": name, "source": str(p), "downscaled": big})

    entries, written = write_crops(train_paths, crops_dir, start=0, count=count, max_count=max_count,
                                   byte_budget=byte_budget, crop=crop, quality=quality, seed=seed,
                                   downscale_prob=downscale_prob, downscale_min=downscale_min)
    n = len(train_paths)
    manifest = {
        "what": "training crops for a GPU slot (scripts/gpu_train_prepare.py); train with patches < crop",
        "data": [str(d) for d in data],
        "num_images": len(paths),
        "num_train_images": n,
        "distinct_sources": len({e[0] for e in entries}),
        "holdout": held_entries,
        "seed": seed,
        "crop": crop,
        "jpeg_quality": quality,
        "downscale_prob": downscale_prob,
        "downscale_min": downscale_min,
        "count": len(entries),
        "crop_bytes": written,
        "commit": commit,
        "crop_fields": ["source", "scale", "left", "top", "subsampling"],
        "crops": entries,
    }
    text = json.dumps({k: v for k, v in manifest.items() if k != "crops"}, indent=1)
    rows = ",\n".join(json.dumps(e) for e in entries)  # one crop a line
    (out / "train-crops.json").write_text(text[:-2] + f',\n "crops": [\n{rows}\n ]\n}}\n')
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        nargs="+",
        default=[str(ROOT.parent / "shared" / "data" / "train")],
        help="training image folders, exactly as given to hpcm train --data (default ../shared/data/train)",
    )
    p.add_argument("--out", default=str(ROOT / ".gpu"), help="the carried folder (default .gpu)")
    p.add_argument("--holdout", type=int, default=16, help="images held out, as hpcm train --val-holdout")
    p.add_argument("--crop", type=int, default=288)
    p.add_argument("--quality", type=int, default=92, help="JPEG quality of the crops")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", default="auto", help="number of crops, or auto (fill the carry budget)")
    p.add_argument("--max-count", type=int, default=2500)
    p.add_argument("--budget-mib", type=float, default=64.0, help="what a run call carries at most")
    p.add_argument("--margin-mib", type=float, default=1.0, help="kept free (commits made before the run)")
    p.add_argument("--downscale-prob", type=float, default=0.5)
    p.add_argument("--downscale-min", type=float, default=0.5)
    p.add_argument("--holdout-max-side", type=int, default=1024)
    p.add_argument("--part", type=int, default=None,
                   help="K >= 2: an extra set .gpu/crops-partK for a warm machine (carry only that folder)")
    args = p.parse_args(argv)
    if args.part is not None:
        return main_part(args)

    repo = ROOT
    out = Path(args.out)
    data = [Path(d) for d in args.data]
    tracked, untracked = git_bytes(repo)
    for sub in ("train-crops", "holdout", "train-crops.json"):  # replaced below: not part of the rest
        target = out / sub
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    other_gpu = folder_bytes(out)
    # the held-out copies are written before the crops; their size is known from the sources
    from hpcm.train.data import find_images
    from hpcm.train.trainer import split_holdout

    held_bytes = sum(q.stat().st_size for q in split_holdout(find_images(data), args.holdout)[1])
    budget = int(args.budget_mib * MIB - args.margin_mib * MIB) - tracked - untracked - other_gpu - held_bytes
    count = None if args.count == "auto" else int(args.count)
    if count is None and budget <= 0:
        print(
            f"gpu_train_prepare: no room for crops ({budget / MIB:.2f} MiB); delete untracked files "
            "or stray folders in .gpu",
            file=sys.stderr,
        )
        return 1
    commit = head_commit(repo)
    manifest = prepare(
        data,
        out,
        holdout=args.holdout,
        crop=args.crop,
        quality=args.quality,
        seed=args.seed,
        count=count,
        max_count=args.max_count,
        byte_budget=budget,
        downscale_prob=args.downscale_prob,
        downscale_min=args.downscale_min,
        holdout_max_side=args.holdout_max_side,
        commit=commit,
    )
    gpu_total = folder_bytes(out)
    total = tracked + untracked + gpu_total
    n = manifest["count"]
    print(
        f"gpu_train_prepare: {n} crops of {args.crop}² (JPEG q{args.quality}) from "
        f"{manifest['distinct_sources']} of {manifest['num_train_images']} training images, "
        f"{manifest['crop_bytes'] / MIB:.2f} MiB ({manifest['crop_bytes'] / max(n, 1) / 1024:.1f} KiB each); "
        f"{len(manifest['holdout'])} held-out images {folder_bytes(out / 'holdout') / MIB:.2f} MiB"
    )
    extra = sorted(
        q.name for q in out.iterdir() if q.name not in ("train-crops", "holdout", "train-crops.json")
    )
    print(
        f"gpu_train_prepare: carried with carry=['.gpu']: tracked {tracked / MIB:.2f} MiB + untracked "
        f"{untracked / MIB:.2f} MiB + .gpu {gpu_total / MIB:.2f} MiB "
        f"(also in .gpu: {', '.join(extra) or '-'}) "
        f"= {total / MIB:.2f} MiB of {args.budget_mib:g} MiB"
    )
    if total > args.budget_mib * MIB:
        print("gpu_train_prepare: OVER the carry limit: use --count with fewer crops", file=sys.stderr)
        return 1
    return 0


def main_part(args: argparse.Namespace) -> int:
    """``--part K``: fill one call's carry (the tree travels too) with the next crops of the sequence."""
    if args.part < 2:
        raise SystemExit("gpu_train_prepare: --part starts at 2 (part 1 is .gpu/train-crops)")
    out = Path(args.out)
    if not (out / "train-crops.json").is_file():
        raise SystemExit("gpu_train_prepare: prepare the main set first (without --part)")
    tracked, untracked = git_bytes(ROOT)
    budget = int(args.budget_mib * MIB - args.margin_mib * MIB) - tracked - untracked
    count = None if args.count == "auto" else int(args.count)
    doc = prepare_part([Path(d) for d in args.data], out, args.part, budget, count=count,
                       max_count=args.max_count, commit=head_commit(ROOT))
    size = folder_bytes(out / f"crops-part{args.part}")
    print(f"gpu_train_prepare: part {args.part}: crops {doc['start']}..{doc['start'] + doc['count'] - 1} "
          f"({doc['count']} crops, {doc['distinct_sources']} images, {doc['crop_bytes'] / MIB:.2f} MiB); "
          f"carried with carry=['.gpu/crops-part{args.part}']: tracked {tracked / MIB:.2f} + untracked "
          f"{untracked / MIB:.2f} + part {size / MIB:.2f} = {(tracked + untracked + size) / MIB:.2f} MiB "
          f"of {args.budget_mib:g} MiB")
    return 0 if tracked + untracked + size <= args.budget_mib * MIB else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
