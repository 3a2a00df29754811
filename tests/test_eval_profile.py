"""hpcm profile: MAC counting, size parsing, exponent fit, memory probe, reports."""

import json
import math

import numpy as np
import pytest
import torch

from hpcm.eval import profile as prof


class ConvModel(torch.nn.Module):
    size_multiple = 16

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)

    def forward(self, x, training=None):
        return {"x_hat": self.conv(x)}


def test_parse_sizes():
    assert prof.parse_sizes("256,512, 768x512") == [(256, 256), (512, 512), (512, 768)]
    for bad in ("", "0", "axb"):
        with pytest.raises(ValueError):
            prof.parse_sizes(bad)


def test_count_macs_of_a_conv():
    model = ConvModel().eval()
    macs = prof.count_macs(model, 32, 48, torch.device("cpu"))
    assert macs == 3 * 8 * 9 * 32 * 48


def test_fit_exponent():
    px = [1e4, 4e4, 1.6e5]
    assert prof.fit_exponent(px, [2e-3 * p**1.5 for p in px]) == pytest.approx(1.5)
    assert math.isnan(prof.fit_exponent([1e4], [1.0]))


def test_peak_memory_sees_a_large_allocation():
    with prof.PeakMemory(torch.device("cpu")) as mem:
        buf = torch.ones(64, 1024, 1024)  # 256 MiB, touched
        del buf
    if mem.mib is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert 200 < mem.mib < 400
    with prof.PeakMemory(torch.device("cpu")) as small:
        torch.ones(16)
    assert small.mib < 64


def test_synthetic_image_is_deterministic():
    a, b = prof.synthetic_image(100, 130), prof.synthetic_image(100, 130)
    assert a.shape == (100, 130, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert 20 < a.std() < 120


def test_profile_forward_only_with_factory(tmp_path):
    rows = prof.profile_model("conv", [(32, 32), (40, 64)], repeat=2, codec=False,
                              factory=lambda n: ConvModel())
    assert [r.padded for r in rows] == [(32, 32), (48, 64)]
    assert rows[0].kmacs_per_pixel == pytest.approx(3 * 8 * 9 / 1e3)
    assert rows[0].params == 3 * 8 * 9 and set(rows[0].times) == {"forward"}
    paths = prof.write_report(rows, tmp_path / "p", device="cpu", repeat=2)
    doc = json.loads(paths["json"].read_text())
    assert len(doc["rows"]) == 2 and "forward" in doc["exponents"]["conv"]
    md = paths["markdown"].read_text()
    assert "| conv | 64×40 |" in md and "fitted k" in md
    assert paths["plot"].stat().st_size > 5000


def test_profile_hpcm_tiny_with_codec():
    pytest.importorskip("hpcm.codec.api")
    rows = prof.profile_model("hpcm-tiny", [(256, 256)], repeat=1)
    r = rows[0]
    assert set(r.times) == {"forward", "compress", "decompress"}
    assert r.roundtrip_exact and r.bpp > 0 and r.params > 100_000
    assert 1 < r.kmacs_per_pixel < 1000


def test_profile_runs_a_variable_rate_model_at_the_default_quality():
    from hpcm.eval.profile import forward_kwargs, profile_model

    rows = profile_model("hpcm-tiny-vr", [(64, 64)], repeat=1, codec=False)
    assert rows[0].kmacs_per_pixel > 0 and rows[0].times["forward"] > 0
    import hpcm

    assert forward_kwargs(hpcm.create_model("hpcm-tiny")) == {}
