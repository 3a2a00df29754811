"""Encoder-side latent refinement (hpcm.codec.refine): lower RD cost, ordinary files, exact decoding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from hpcm.codec.api import decode, encode, refinement_lambda
from hpcm.codec.image_io import read_image
from hpcm.codec.refine import RefineSettings, refine_latent
from hpcm.errors import HPCMError
from hpcm.models import protocol
from hpcm.models.io import load_model
from hpcm.rates import MSE_LAMBDAS


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return load_model("hpcm-tiny-vr").eval()


@pytest.fixture(scope="module")
def image(kodak_dir) -> np.ndarray:
    path = kodak_dir / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"Kodak not found at {kodak_dir}")
    return np.ascontiguousarray(read_image(path)[180:244, 250:378])


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


def test_latent_statistics_describe_what_compress_codes(model, image):
    x = _tensor(image)
    with torch.no_grad():
        y = model.analyse(x, 6.0)
        stats = model.latent_statistics(y)
        assert torch.equal(torch.round(y - stats.mu) + stats.mu, stats.y_hat)
        assert torch.equal(model(x, training=False, quality=6.0)["x_hat"],
                           model(x, training=False, quality=6.0, latent=y)["x_hat"])
    out = model.compress(x, quality=6.0, latent=y)
    assert out["latent_crc"] == model.compress(x, quality=6.0)["latent_crc"]
    assert float(stats.z_bits) > 0 and stats.scales.shape == y.shape


def test_refinement_lowers_the_true_cost(model, image):
    torch.manual_seed(0)
    x = _tensor(image)
    lmbda = model.rate_lambda(7.0)
    y, report = refine_latent(model, x, lmbda, RefineSettings(steps=10), quality=7.0)
    assert report.best_cost < report.start_cost and report.best_step > 0
    with torch.no_grad():
        y0 = model.analyse(x, 7.0)
    assert not torch.equal(y, y0) and all(p.grad is None for p in model.parameters())
    # the report's cost is the real one: recompute it for the chosen latent
    stats = model.latent_statistics(y)
    lik = model.entropy_estimation.likelihood
    with torch.no_grad():
        bits = -torch.log2(lik(torch.round(y - stats.mu), stats.scales)).sum() + stats.z_bits
        mse = (model.synthesise(stats.y_hat, 7.0) - x).square().mean()
    cost = float(bits) / (x.shape[-2] * x.shape[-1]) + lmbda * 255**2 * float(mse)
    assert cost == pytest.approx(report.best_cost, rel=1e-5)


def test_backtracking_returns_to_the_best_latent(model, image):
    """A step far too large overshoots; backtracking halves it from the best latent and still improves."""
    x = _tensor(image)
    lmbda = model.rate_lambda(7.0)
    settings = RefineSettings(steps=30, step_size=0.5, backtrack=False)
    _, plain = refine_latent(model, x, lmbda, settings, quality=7.0)
    _, back = refine_latent(model, x, lmbda, dataclasses.replace(settings, backtrack=True), quality=7.0)
    assert plain.best_step == 0 and plain.best_cost == plain.start_cost  # every re-evaluation found it worse
    assert back.best_cost < plain.best_cost and back.best_step > 0


def test_zero_steps_keep_the_analysis_latent(model, image):
    x = _tensor(image)
    y, report = refine_latent(model, x, model.rate_lambda(3.0), RefineSettings(steps=0), quality=3.0)
    with torch.no_grad():
        assert torch.equal(y, model.analyse(x, 3.0))
    assert report.best_step == 0 and report.best_cost == report.start_cost


def test_refined_file_is_an_ordinary_file_that_decodes_exactly(model, image):
    """Odd size (padding excluded from the distortion), verify on: decode == the encoder's forward."""
    odd = np.ascontiguousarray(image[:50, :100])
    plain, header0, _ = encode(model, odd, quality=7.0)
    data, header, times = encode(model, odd, quality=7.0, verify=True, refine=RefineSettings(steps=8))
    assert header.version == header0.version and header.fingerprint == header0.fingerprint
    assert times.extra["refine"] > 0 and times.extra["refine_gain"] > 0
    decoded, _, _ = decode(data, model)
    assert decoded.shape == odd.shape
    reference, _, _ = decode(plain, model)
    cost = [len(d) * 8 / odd[..., 0].size + model.rate_lambda(7.0) * float(
        ((r.astype(np.float64) - odd) ** 2).mean()) for d, r in ((plain, reference), (data, decoded))]
    assert cost[1] < cost[0]  # the file's own bytes and 8-bit pixels agree with the estimate's direction


def test_lambda_of_the_refinement(model):
    assert refinement_lambda(model, 8.0) == pytest.approx(model.rate_lambda(8.0))
    fixed = load_model("hpcm-tiny", quality=3)
    assert refinement_lambda(fixed, None) == MSE_LAMBDAS[2]
    fixed.weights_info = {}
    with pytest.raises(HPCMError, match="λ"):
        refinement_lambda(fixed, None)


def test_models_without_the_methods_are_refused(image):
    assert protocol.can_refine(load_model("hpcm-tiny-vr"))
    assert not protocol.can_refine(nn.Identity())
    tiny = load_model("hpcm-tiny", quality=3)
    bare = type("NoRefine", (type(tiny),), {"latent_statistics": None})(tiny.config)
    bare.load_state_dict(tiny.state_dict())
    with pytest.raises(HPCMError, match="latent refinement"):
        encode(bare.eval(), image, refine=RefineSettings(steps=1))


@pytest.mark.parametrize("kwargs", [{"steps": -1}, {"step_size": 0.0}, {"reevaluate_every": 0}])
def test_settings_are_checked(kwargs):
    with pytest.raises(ValueError):
        RefineSettings(**kwargs)
