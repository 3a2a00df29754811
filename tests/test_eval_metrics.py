"""Metrics follow the evaluation protocol: 8-bit PSNR, pytorch_msssim MS-SSIM (data_range=1), bpp."""

import math

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim as reference_ms_ssim

from hpcm.eval import metrics


def _img(h=200, w=240, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_psnr_known_values():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a + 1  # MSE = 1
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(255))
    assert metrics.psnr(a, a) == math.inf
    c = a.copy()
    c[0, 0, 0] = 110  # MSE = 100 / 768
    assert metrics.psnr(a, c) == pytest.approx(10 * math.log10(255**2 * 768 / 100))


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        metrics.psnr(_img(20, 20), _img(20, 21))


def test_ms_ssim_matches_pytorch_msssim_on_unit_range():
    a, b = _img(seed=1), _img(seed=2)
    b = ((a.astype(np.int16) + (b.astype(np.int16) - 128) // 8).clip(0, 255)).astype(np.uint8)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    y = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
    expected = float(reference_ms_ssim(y, x, data_range=1.0))
    assert metrics.ms_ssim(a, b) == pytest.approx(expected, abs=1e-6)
    # CompressAI's convention (8-bit rounded, data_range=255) is the same number
    assert float(reference_ms_ssim(y * 255, x * 255, data_range=255)) == pytest.approx(expected, abs=1e-5)
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_small_images_use_a_smaller_window():
    assert metrics.ms_ssim_window(512, 768) == 11
    assert metrics.ms_ssim_window(100, 300) == 7
    assert metrics.ms_ssim_window(40, 40) == 3
    assert metrics.ms_ssim_window(32, 32) == 0
    a = _img(100, 120)
    noisy = (a.astype(np.int16) + np.random.default_rng(9).integers(-20, 21, a.shape)).clip(0, 255)
    assert 0.0 < metrics.ms_ssim(a, noisy.astype(np.uint8)) < metrics.ms_ssim(a, a)
    assert math.isnan(metrics.ms_ssim(_img(30, 30), _img(30, 30, seed=3)))


def test_db_and_bpp_and_to_uint8():
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)
    assert metrics.ms_ssim_db(1.0) == math.inf
    assert metrics.bpp(96, 16, 48) == pytest.approx(1.0)
    x = torch.tensor([[[[0.0, 0.5 / 255, 1.7 / 255, 2.0]]]]).expand(1, 3, 1, 4)
    assert metrics.to_uint8(x)[0, :, 0].tolist() == [0, 0, 2, 255]
    m = metrics.image_metrics(_img(seed=4), _img(seed=4))
    assert set(m) == {"psnr-rgb", "ms-ssim-rgb", "ms-ssim-db-rgb"}
