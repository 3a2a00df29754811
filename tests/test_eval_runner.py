"""hpcm eval: a test double checks the bookkeeping exactly; hpcm-tiny checks the real codec end to end."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hpcm.eval.metrics import psnr
from hpcm.eval.runner import Codec, evaluate, evaluate_model
from hpcm.eval.schema import validate_results


@pytest.fixture(scope="module")
def two_crops(kodak_dir, tmp_path_factory):
    """kodim01 and kodim02 cropped (256x256 and 200x232) into a temporary data set."""
    folder = tmp_path_factory.mktemp("kodak2")
    for name, (h, w) in (("kodim01", (256, 256)), ("kodim02", (200, 232))):
        with Image.open(kodak_dir / f"{name}.png") as im:
            crop = np.asarray(im.convert("RGB"))[100 : 100 + h, 200 : 200 + w]
        Image.fromarray(crop).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


class JpegDouble(torch.nn.Module):
    """Stands in for a model: JPEG at ``quality`` as the codec; forward has 1 bit per latent element."""

    size_multiple = 64

    def __init__(self, quality: int) -> None:
        super().__init__()
        self.quality = quality
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.weights_info = {"preset": "jpeg-double", "quality": quality, "trained": True, "fingerprint": "x"}

    def forward(self, x, training=None):
        b, _, h, w = x.shape
        lk = {"y": torch.full((b, 4, h // 16, w // 16), 0.5), "z": torch.full((b, 2, h // 64, w // 64), 0.5)}
        return {"x_hat": x + 0.3 / 255, "likelihoods": lk}


def _jpeg(model, image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=model.quality)
    return buf.getvalue()


def _unjpeg(data, model):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


DOUBLE = Codec(compress=_jpeg, decompress=_unjpeg)


def _loader(spec, quality=None, device="cpu"):
    assert spec == "double"
    return JpegDouble(quality)


def test_bookkeeping_with_double(two_crops):
    doc = evaluate(["double"], two_crops, qualities=[20, 60], loader=_loader, codec=DOUBLE,
                   show_progress=False)
    validate_results(doc)
    assert doc["name"] == "jpeg-double" and doc["quality"] == [20, 60]
    assert doc["description"] == "Inference (hpcm, constriction)"
    assert [p["source"] for p in doc["per_image"]] == ["kodim01", "kodim02"] * 2
    for rec in doc["per_image"]:
        img = np.asarray(Image.open(two_crops / f"{rec['source']}.png"))
        data = _jpeg(JpegDouble(rec["quality"]), img)
        assert rec["results"]["bpp"] == pytest.approx(8 * len(data) / (img.shape[0] * img.shape[1]))
        assert rec["results"]["psnr-rgb"] == pytest.approx(psnr(img, _unjpeg(data, None)))
        assert rec["results"]["encoding_time"] > 0
    r = doc["results"]
    assert r["bpp"][0] < r["bpp"][1]
    first = [p["results"]["psnr-rgb"] for p in doc["per_image"][:2]]
    assert r["psnr-rgb"][0] == pytest.approx(np.mean(first))
    assert doc["meta"]["points"][1]["fingerprint"] == "x"


def test_estimate_mode_with_double(two_crops):
    img = np.asarray(Image.open(two_crops / "kodim02.png"))  # 200x232 -> padded to 256x256
    recs = evaluate_model(JpegDouble(1), [("k", img)], name="d", estimate=True)
    res = recs[0]["results"]
    expected_bits = 4 * 16 * 16 + 2 * 4 * 4
    assert res["bpp"] == pytest.approx(expected_bits / (200 * 232))
    assert res["psnr-rgb"] == np.inf  # x + 0.3/255 rounds back to x
    assert res["encoding_time"] == pytest.approx(res["forward_time"] / 2)


def test_hpcm_tiny_real_vs_estimate(two_crops):
    """Real coding on hpcm-tiny (shipped q3): file bytes ≈ likelihood bits (+ header), same reconstruction."""
    pytest.importorskip("hpcm.codec.api")
    real = evaluate(["hpcm-tiny"], two_crops, show_progress=False)
    est = evaluate(["hpcm-tiny"], two_crops, estimate=True, show_progress=False)
    for doc in (real, est):
        validate_results(doc)
        assert doc["name"] == "hpcm-tiny" and len(doc["per_image"]) == 2
    assert est["description"] == "Inference (entropy estimation)"
    for r, e in zip(real["per_image"], est["per_image"]):
        pixels = {"kodim01": 256 * 256, "kodim02": 200 * 232}[r["source"]]
        real_bytes = r["results"]["bpp"] * pixels / 8
        est_bytes = e["results"]["bpp"] * pixels / 8
        assert real_bytes == pytest.approx(round(real_bytes))
        assert est_bytes < real_bytes < 1.05 * est_bytes + 300
        assert r["results"]["psnr-rgb"] == pytest.approx(e["results"]["psnr-rgb"], abs=0.01)
        assert np.isfinite(r["results"]["ms-ssim-db-rgb"])


def test_untrained_preset_warns(two_crops, no_bundled_weights):
    with pytest.warns(UserWarning, match="untrained"):
        doc = evaluate(["hpcm-tiny"], two_crops, estimate=True, limit=1, show_progress=False)
    assert doc["meta"]["points"][0]["trained"] is False
