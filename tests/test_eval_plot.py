"""RD plots: a PNG per call, anchors selectable, curves without the metric skipped with a note."""

import numpy as np
from PIL import Image

from hpcm.eval.plot import load_anchors, plot_rd


def test_plot_with_anchors(tmp_path, shared_dir):
    anchors = load_anchors(shared_dir / "anchors" / "kodak", ["jpeg", "vtm", "paper-elic*"])
    assert sorted(s for s, _ in anchors) == ["jpeg", "paper-elic2022_mse", "vtm"]
    results = {"bpp": [0.2, 0.5, 0.9], "psnr-rgb": [29.0, 32.0, 34.5], "ms-ssim-rgb": [0.95, 0.975, 0.985]}
    mine = {"name": "mine", "description": "", "results": results}
    out, notes = plot_rd([mine], tmp_path / "rd.png", metric="both", anchors=anchors, title="Kodak")
    assert notes == ["anchor elic2022: no ms-ssim"]
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[1] > img.shape[0] > 300 and img.std() > 10


def test_plot_results_file_only(tmp_path, shared_dir):
    out, notes = plot_rd([shared_dir / "anchors" / "kodak-measured" / "pillow-webp.json"], tmp_path / "a.png",
                         metric="ms-ssim")
    assert out.exists() and notes == []
    assert load_anchors(tmp_path) == []
