"""Rate-distortion plots (matplotlib, Agg backend) of CompressAI-schema result files.

One curve per results file (solid, with markers); anchors (published / measured JSONs from a folder)
are drawn dashed and thinner, like ``compressai.utils.plot`` draws classical codecs. MS-SSIM is plotted
in dB (−10·log10(1 − MS-SSIM)). Files that lack the chosen metric are skipped with a note.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcm.eval.results import load_results, rd_points

METRIC_LABELS = {"psnr": "PSNR-RGB (dB)", "ms-ssim": "MS-SSIM-RGB (dB)"}


def load_anchors(
    folder: str | os.PathLike[str], select: Sequence[str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """``[(file stem, document)]`` of the valid results JSONs directly in ``folder``.

    ``select`` holds shell patterns matched against the file stem (``jpeg``, ``compressai-*``, ``vtm``);
    ``None`` keeps every file. Files that are not results documents are ignored.
    """
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        if select and not any(fnmatch.fnmatch(path.stem, pat) for pat in select):
            continue
        try:
            out.append((path.stem, load_results(path)))
        except (ValueError, KeyError, json.JSONDecodeError):
            continue
    return out


def dataset_of(doc: dict[str, Any]) -> str | None:
    """The data set a results document was measured on: ``meta.dataset`` (written by ``hpcm eval`` and
    ``hpcm bench-codec``), else the one folder its ``meta.images`` come from; None when it does not say."""
    meta = doc.get("meta") or {}
    if isinstance(meta.get("dataset"), str) and meta["dataset"]:
        return meta["dataset"]
    images = meta.get("images")
    if isinstance(images, list) and images:
        parents = {Path(str(p)).parent.name for p in images}
        if len(parents) == 1:
            return parents.pop() or None
    return None


def anchors_apply(docs: Sequence[dict[str, Any]], anchor_dataset: str) -> tuple[bool, str | None]:
    """Whether anchors measured on ``anchor_dataset`` belong under ``docs``, and a note saying why not.

    They are drawn when every result names ``anchor_dataset`` (case-insensitive), or names no data set
    (older files; then with a note); never under a result from another data set.
    """
    named = {d["name"]: dataset_of(d) for d in docs}
    other = {n: ds for n, ds in named.items() if ds is not None and ds.lower() != anchor_dataset.lower()}
    if other:
        which = ", ".join(f"{n} ({ds})" for n, ds in other.items())
        return False, (f"anchors not drawn: they are {anchor_dataset} results, and {which} is from another "
                       "data set")
    unknown = [n for n, ds in named.items() if ds is None]
    if unknown:
        return True, (f"{', '.join(unknown)} does not name its data set; the anchors drawn are "
                      f"{anchor_dataset} results")
    return True, None


def plot_rd(
    results: Sequence[dict[str, Any] | str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    metric: str = "psnr",
    anchors: Sequence[tuple[str, dict[str, Any]]] = (),
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    max_bpp: float | None = None,
) -> tuple[Path, list[str]]:
    """Draw RD curves to ``output``; ``metric`` is ``psnr``, ``ms-ssim`` or ``both`` (two panels).

    The bpp axis ends at ``max_bpp``, by default 1.3× the largest bpp of the result files (anchors often
    reach 3–5 bpp and would squash the curves); the distortion axis fits the points inside it.
    Each curve keeps its colour across panels. Returns the written path and notes about skipped curves.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = [r if isinstance(r, dict) else load_results(r) for r in results]
    metrics = ["psnr", "ms-ssim"] if metric == "both" else [metric]
    for m in metrics:
        if m not in METRIC_LABELS:
            raise ValueError(f"metric must be psnr, ms-ssim or both, got {metric!r}")
    size = figsize or (7.0 * len(metrics), 5.2)
    fig, axes = plt.subplots(1, len(metrics), figsize=size, squeeze=False)
    notes: list[str] = []
    if max_bpp is None and docs:
        max_bpp = 1.3 * max(max(d["results"]["bpp"]) for d in docs)
    strong = plt.get_cmap("tab10").colors
    muted = plt.get_cmap("Dark2").colors + plt.get_cmap("Set1").colors
    curves = [(doc, True, strong[i % len(strong)]) for i, doc in enumerate(docs)]
    curves += [(doc, False, muted[i % len(muted)]) for i, (_s, doc) in enumerate(anchors)]
    for ax, m in zip(axes[0], metrics):
        shown: list[float] = []
        for doc, is_result, color in curves[len(docs):] + curves[: len(docs)]:  # results drawn on top
            try:
                x, y = rd_points(doc, m)
            except KeyError:
                notes.append(f"{'' if is_result else 'anchor '}{doc['name']}: no {m}")
                continue
            pts = sorted(zip(x, y))
            style = (dict(linestyle="-", linewidth=2.0, marker="o", markersize=5) if is_result
                     else dict(linestyle="--", linewidth=1.1, marker=".", markersize=4, alpha=0.8))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, label=doc["name"], **style)
            shown += [p[1] for p in pts if (max_bpp is None or p[0] <= max_bpp) and math.isfinite(p[1])]
        if max_bpp is not None:
            ax.set_xlim(0, max_bpp)
            if shown:
                pad = 0.04 * (max(shown) - min(shown) or 1.0)
                ax.set_ylim(min(shown) - pad, max(shown) + pad)
        ax.set_xlabel("bits per pixel (bpp)")
        ax.set_ylabel(METRIC_LABELS[m])
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            handles, labels = ax.get_legend_handles_labels()
            result_names = {d["name"] for d in docs}
            order = sorted(range(len(labels)), key=lambda i: labels[i] not in result_names)
            # outside the axes, right of the plot: a legend never hides a curve
            ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small",
                      loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        if title:
            ax.set_title(title if len(metrics) == 1 else f"{title} — {m.upper()}")
    return _save_figure(fig, output), notes


def plot_deltas(
    summary: dict[str, Any],
    output: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Differences to the baseline at equal quality, one curve per arm: Δbpp (%) and ΔPSNR (dB) against
    the quality, with the baseline's seed spread (``summary["noise"]``) shaded around zero — the view in
    which arms that overlap on an RD plot separate. ``summary``: :func:`hpcm.eval.study.build_summary`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noise = summary.get("noise") or {}
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6))
    colors = plt.get_cmap("tab10").colors
    panels = (("dbpp_pct", "Δbpp at equal quality (%)", noise.get("dbpp_abs_pct")),
              ("dpsnr_db", "ΔPSNR at equal quality (dB)", noise.get("dpsnr_abs_db")))
    for ax, (key, label, spread) in zip(axes, panels):
        curves = {name: [d for d in entry.get("deltas") or [] if d.get(key) is not None]
                  for name, entry in summary["variants"].items()}
        size = sorted((max(abs(d[key]) for d in rows), name) for name, rows in curves.items() if rows)
        # one arm far beyond the rest (e.g. a component still untrained) would flatten every other curve
        far = len(size) > 1 and size[-1][0] > 4 * max(size[-2][0], 1e-9)
        limit = 1.15 * max(size[-2][0], spread or 0.0) if far else 0.0  # 0: the rest flat at zero, no zoom
        off_scale = size[-1][1] if limit > 0 else None
        for i, (name, rows) in enumerate(curves.items()):
            if not rows:
                continue
            ax.plot([d["quality"] for d in rows], [d[key] for d in rows], marker="o", linewidth=1.8,
                    color=colors[i % len(colors)], label=name + (" (off scale)" if name == off_scale else ""),
                    linestyle="--" if name.startswith(summary["baseline"] + "@") else "-")
        if off_scale is not None:
            ax.set_ylim(-limit, limit)
        if spread:
            ax.axhspan(-spread, spread, color="0.85", zorder=0, label="seed spread")
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_xlabel("quality")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    if axes[0].has_data():
        axes[1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, output)


def _save_figure(fig: Any, output: str | os.PathLike[str]) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
