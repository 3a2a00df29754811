"""End-to-end coding with the real hpcm-tiny model: any size, exact against the eval forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcm.codec import container
from hpcm.codec.api import (
    compress_image,
    decode,
    decompress_image,
    encode,
    model_identity,
    pad_image,
    padded_size,
)
from hpcm.errors import FormatError, ImageError, ModelMismatchError
from hpcm.models.hpcm import LikelihoodCoder
from hpcm.models.io import load_model


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_model("hpcm-tiny")


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish random image (gradients + noise), more realistic than white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 3 + yy, yy * 2, (xx + yy) * 1.5], axis=2) % 256
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def reference(model, padded: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """ŷ and the 8-bit x̂ of the eval-mode forward pass on the padded image."""
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = model.g_a(x)
        z_hat = torch.round(model.h_a(y) - model.means_hyper) + model.means_hyper
        y_hat = model.context_pass(model.h_s(z_hat), LikelihoodCoder(False), y)
        x_hat = model(x, training=False)["x_hat"]
    x8 = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return y_hat, x8


@pytest.mark.parametrize("h, w", [(1, 1), (17, 33), (100, 257), (64, 128)])
def test_roundtrip_exact(tiny, h, w):
    image = smooth_image(h, w, seed=h * 1000 + w)
    data, header, _ = encode(tiny, image)
    ph, pw = padded_size(h, w, tiny.size_multiple)
    assert (header.height, header.width, header.padded_height, header.padded_width) == (h, w, ph, pw)
    assert header.z_shape == (ph // 64, pw // 64)
    padded, top, left = pad_image(image, tiny.size_multiple)
    assert (header.crop_top, header.crop_left) == (top, left)

    y_ref, x_ref = reference(tiny, padded)
    _, streams = container.unpack(data)
    with torch.inference_mode():
        y_dec = tiny.decompress_latent(streams, header.z_shape)
    assert torch.equal(y_dec, y_ref)

    decoded = decompress_image(data, tiny)
    assert decoded.shape == (h, w, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, x_ref[top : top + h, left : left + w])


def test_pad_image_modes():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    rep, top, left = pad_image(img, 64, "replicate")
    assert rep.shape == (64, 64, 3) and (top, left) == (31, 30)
    np.testing.assert_array_equal(rep[top : top + 2, left : left + 3], img)
    np.testing.assert_array_equal(rep[0, 0], img[0, 0])
    np.testing.assert_array_equal(rep[-1, -1], img[-1, -1])
    zeros, _, _ = pad_image(img, 64, "zeros")
    assert zeros[0, 0].sum() == 0
    refl, _, _ = pad_image(img, 64, "reflect")
    np.testing.assert_array_equal(refl[top : top + 2, left : left + 3], img)
    with pytest.raises(ValueError):
        pad_image(img, 64, "wrap")


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_other_padding_modes_decode_exactly(tiny, mode):
    image = smooth_image(30, 70, seed=5)
    data, header, _ = encode(tiny, image, padding=mode)
    assert header.padding == mode
    padded, top, left = pad_image(image, tiny.size_multiple, mode)
    _, x_ref = reference(tiny, padded)
    np.testing.assert_array_equal(decompress_image(data, tiny), x_ref[top : top + 30, left : left + 70])


def test_verify_stores_reconstruction_checksum(tiny):
    image = smooth_image(20, 24, seed=2)
    data, header, times = encode(tiny, image, verify=True)
    assert header.recon_crc is not None and "verify" in times.extra
    out, h2, _ = decode(data, tiny)
    assert h2.recon_crc == header.recon_crc
    # a stored checksum that the decoded image does not match: refused, never returned
    h2.recon_crc ^= 1
    _, streams = container.unpack(data)
    with pytest.raises(FormatError, match="does not match the encoder"):
        decompress_image(container.pack(h2, streams), tiny)


def test_reconstruction_checksum_keeps_its_layout(tiny, monkeypatch):
    """A file verified by an earlier writer (g_s in the contiguous layout; flag bit 1 clear) decodes in that
    layout, so its checksum holds on the encoder's platform; new files record channels-last."""
    from dataclasses import replace

    from hpcm.codec import api

    image = smooth_image(40, 56, seed=4)
    data, header, _ = encode(tiny, image, verify=True)
    assert header.recon_layout == "channels_last" and data[5] == 0x03
    _, streams = container.unpack(data)
    legacy = replace(header, recon_layout="contiguous")
    expected, _ = api._decode_streams(tiny, legacy, streams)  # what such a writer stored the checksum of
    legacy.recon_crc = api.image_crc(expected)
    seen = []
    decompress = tiny.decompress

    def spy(*args, **kwargs):
        seen.append(kwargs.get("synthesis_layout"))
        return decompress(*args, **kwargs)

    monkeypatch.setattr(tiny, "decompress", spy)
    out, _, times = decode(container.pack(legacy, streams), tiny)
    np.testing.assert_array_equal(out, expected)
    assert seen == ["contiguous"] and "recon_crc_mismatch" not in times.extra
    decode(data, tiny)
    assert seen[-1] == "channels_last"


def test_other_weights_refused(tiny):
    data = compress_image(tiny, smooth_image(8, 8, seed=3))
    other = load_model("hpcm-tiny")
    with torch.no_grad():
        other.means_hyper.add_(0.25)
    other.weights_info.pop("fingerprint")
    with pytest.raises(ModelMismatchError, match="weights"):
        decompress_image(data, other)


def test_decoding_without_a_model_finds_the_shipped_one(tiny, tmp_path):
    image = smooth_image(24, 40, seed=4)
    vr = load_model("hpcm-tiny-vr")
    data = compress_image(vr, image, quality=3.25)
    np.testing.assert_array_equal(decompress_image(data), decompress_image(data, vr))
    (tmp_path / "a.hpcm").write_bytes(compress_image(tiny, image))
    np.testing.assert_array_equal(decompress_image(tmp_path / "a.hpcm"),
                                  decompress_image(tmp_path / "a.hpcm", tiny))
    other = load_model("hpcm-tiny-vr")  # weights that were never shipped: refused, naming what decodes it
    with torch.no_grad():
        other.means_hyper.add_(0.25)
    other.weights_info.pop("fingerprint")
    with pytest.raises(ModelMismatchError, match="not the weights shipped for hpcm-tiny-vr"):
        decompress_image(compress_image(other, image))


def test_other_device_kind_refused_for_v1_only(tiny):
    image = smooth_image(8, 8, seed=4)
    header, streams = container.unpack(compress_image(tiny, image))
    header.device, header.threads = "cuda", 0
    assert decompress_image(container.pack(header, streams), tiny).shape == (8, 8, 3)  # v2: anywhere
    data, _, _ = encode(tiny, image, format_version=1)
    header, streams = container.unpack(data)
    header.device, header.threads = "cuda", 0
    forged = container.pack(header, streams)
    with pytest.raises(ModelMismatchError, match="--device cuda"):
        decompress_image(forged, tiny)
    assert decompress_image(forged, tiny, allow_cross_device=True).shape == (8, 8, 3)


def test_bad_inputs(tiny):
    with pytest.raises(ImageError, match="uint8"):
        compress_image(tiny, np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageError):
        compress_image(tiny, np.zeros((4, 4), np.uint8))
    big = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (container.MAX_SIDE + 1, 2, 3))
    with pytest.raises(ImageError, match="exceeds the limit"):
        compress_image(tiny, big)


def test_identity_of_a_plain_model_is_its_preset():
    from hpcm.models.registry import create_model

    preset, quality, fp = model_identity(create_model("hpcm-tiny"))
    assert preset == "hpcm-tiny" and quality == 0 and len(fp) == 8


def test_decoder_uses_the_encoders_thread_count():
    """oneDNN rounding depends on the thread count; files record it and decoders pin it."""
    import numpy as np
    import torch

    from hpcm.codec.api import decode, encode
    from hpcm.models.io import load_model

    model = load_model("hpcm-tiny")
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data, header, _ = encode(model, image, verify=True)
        assert header.threads == 2
        torch.set_num_threads(1)
        decoded, dheader, _ = decode(data, model)  # checks the reconstruction CRC of the verified file
        assert dheader.threads == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    assert decoded.shape == image.shape
