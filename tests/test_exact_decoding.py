"""Formats 2 and 3 decode to the same ŷ on any thread count, with oneDNN on or off, and on a perturbed
decoder network (a stand-in for another CPU or a GPU); larger deviations are clean errors (issue 16)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from hpcm.codec import container
from hpcm.codec.api import decode, decompress_image, encode
from hpcm.codec.image_io import read_image
from hpcm.entropy.conditional import (
    MEAN_GRID_BITS,
    MEAN_TOLERANCE,
    PAIR_BAND,
    SCALE_TOLERANCE,
    SIDE_FORMAT,
    TOLERANCE,
    ConditionalGGM,
    SideReader,
    SideReaderV3,
    SideWriter,
    SideWriterV3,
    _confusable_width,
    _confusable_width_pairs,
    _weights_v3,
    _xor_syndrome,
    latent_checksum,
)
from hpcm.errors import FormatError
from hpcm.models.hpcm import LikelihoodCoder
from hpcm.models.io import load_model
from hpcm.models.registry import list_models

TINY_PRESETS = [name for name in list_models() if name.endswith("-tiny")]


@pytest.fixture(scope="module")
def crop(kodak_dir) -> torch.Tensor:
    path = kodak_dir / "kodim23.png"
    if not path.is_file():
        pytest.skip(f"Kodak not found at {kodak_dir}")
    img = read_image(path)[128:256, 256:448]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255


@contextlib.contextmanager
def threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def eval_latent(model, x) -> torch.Tensor:
    """ŷ of the eval forward pass (the same step loop and rules as the coder)."""
    with torch.no_grad():
        y = model.g_a(x)
        z_hat = torch.round(model.h_a(y) - model.means_hyper) + model.means_hyper
        return model.context_pass(model.h_s(z_hat), LikelihoodCoder(False), y)


def perturbed(name: str, rel: float, seed: int = 0):
    """The preset whose parameter networks (h_s and the two spatial priors, which give every σ and μ) have
    their outputs multiplied by 1 + rel·N(0, 1): a stand-in for another platform's rounding."""
    model = load_model(name, quality=3 if name == "hpcm-tiny" else None)
    gen = torch.Generator().manual_seed(seed)

    def noise(module, args, out):
        return out * (1 + rel * torch.randn(out.shape, generator=gen, dtype=out.dtype))

    for module in (model.h_s, model.y_spatial_prior_s1_s2, model.y_spatial_prior_s3):
        module.register_forward_hook(noise)
    return model


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_one_thread_encode_decodes_identically_with_two_threads_and_without_onednn(name, crop):
    model = load_model(name, quality=3 if name == "hpcm-tiny" else None)
    with threads(1):
        enc = model.compress(crop)
        ref = eval_latent(model, crop)
    assert len(enc["strings"]) == 3 and enc["latent_crc"] == latent_checksum(ref)
    with threads(2):
        two = model.decompress_latent(enc["strings"], enc["shape"])
    with threads(1), torch.backends.mkldnn.flags(enabled=False):
        plain = model.decompress_latent(enc["strings"], enc["shape"])
    assert torch.equal(two, ref) and torch.equal(plain, ref)


@pytest.mark.parametrize("name", ["hpcm-small-vr", "hpcm-tiny-vr"])
def test_shipped_variable_rate_models_decode_identically_at_both_ends_of_their_range(name, crop):
    """The shipped variable-rate weights (the default model among them) at their lowest and highest quality,
    where the gained latents and μ are largest: 1-thread encode, 2-thread and oneDNN-off decodes."""
    model = load_model(name)
    for q in model.quality_gains.quality_range:
        with threads(1):
            enc = model.compress(crop, quality=q)
        with threads(2):
            two = model.decompress_latent(enc["strings"], enc["shape"])
        with threads(1), torch.backends.mkldnn.flags(enabled=False):
            plain = model.decompress_latent(enc["strings"], enc["shape"])
        assert latent_checksum(two) == latent_checksum(plain) == enc["latent_crc"], q


def test_mu_is_on_the_grid_and_y_hat_is_exact(crop):
    model = load_model("hpcm-tiny", quality=3)
    y_hat = eval_latent(model, crop)
    # every coded value is an integer plus a multiple of 2^-k: exactly representable
    scaled = y_hat.double() * 2**MEAN_GRID_BITS
    assert torch.equal(scaled, torch.round(scaled))


@pytest.mark.parametrize("rel", [3e-6, 6e-6])
@pytest.mark.parametrize("version", [3, 2])
def test_decoder_perturbed_below_tolerance_decodes_identically(rel, version, crop):
    """Relative noise on every σ, μ of 3e-6 (the largest measured for hpcm-tiny between CPU settings) and
    6e-6 (δ_μ/5 of format 3: the largest of ~10^5 Gaussian draws stays below δ_μ): decisions that fall on the
    other side of an edge are corrected, ŷ is bit-identical."""
    model = load_model("hpcm-tiny", quality=3)
    enc = model.compress(crop, format_version=version)
    other = perturbed("hpcm-tiny", rel)
    latent = other.decode_latent(enc["strings"], enc["shape"], format_version=version)
    assert torch.equal(latent.y_hat, eval_latent(model, crop))
    if rel == 6e-6:
        assert latent.corrections > 0  # the side stream did the work


def test_decoder_perturbed_far_above_tolerance_is_a_clean_error(crop):
    model = load_model("hpcm-tiny", quality=3)
    image = (crop[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    data, _, _ = encode(model, image)
    other = perturbed("hpcm-tiny", 1e-3)
    other.weights_info = dict(model.weights_info)
    with pytest.raises(FormatError, match="tolerance|latent checksum"):
        decompress_image(data, other)


def test_forged_latent_checksum_is_a_clean_error():
    model = load_model("hpcm-tiny")
    image = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    data, header, _ = encode(model, image)
    h, streams = container.unpack(data)
    h.latent_crc ^= 1
    with pytest.raises(FormatError, match="latent checksum"):
        decompress_image(container.pack(h, streams), model)


def test_thread_count_of_the_header_is_not_used(crop):
    """A hostile v2 header asking for 255 threads does not change the decoder's thread count."""
    model = load_model("hpcm-tiny")
    image = (crop[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    data, header, _ = encode(model, image)
    h, streams = container.unpack(data)
    h.threads = 255
    seen = []
    original = model.decompress

    def spy(*args, **kw):
        seen.append(torch.get_num_threads())
        return original(*args, **kw)

    model.decompress = spy
    with threads(1):
        out, _, _ = decode(container.pack(h, streams), model, threads=2)
        assert torch.get_num_threads() == 1
    assert seen == [2]
    # the latent is checked exactly (checksum); pixels after g_s may differ by ±1 between thread counts
    ref = decompress_image(data, load_model("hpcm-tiny"))
    assert np.abs(out.astype(np.int16) - ref.astype(np.int16)).max() <= 1


def test_version_1_files_still_decode():
    model = load_model("hpcm-tiny")
    image = np.random.default_rng(4).integers(0, 256, (48, 70, 3), dtype=np.uint8)
    data, header, _ = encode(model, image, format_version=1, verify=True)
    assert data[4] == 1 and header.latent_crc is None and len(header.stream_lengths) == 2
    out, h, _ = decode(data, model)
    assert h.version == 1 and h.quality == 3 and isinstance(h.quality, int)
    assert model.entropy_estimation.mean_grid_bits == MEAN_GRID_BITS  # the model is not changed by v1 coding
    # the v1 decoder reproduces the official (unquantised μ) eval forward
    from hpcm.codec.api import pad_image

    padded, top, left = pad_image(image, model.size_multiple)
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = model(x, training=False, format_version=1)["x_hat"]
    ref = (ref.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out, ref[top : top + 48, left : left + 70])


# -- the side information, unit level -------------------------------------------------------------------


def _random_step(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.rand(1, n, generator=g) * 6 - 2.5)
    mu = torch.randn(1, n, generator=g) * 3
    return sigma, mu


@pytest.fixture(scope="module")
def em() -> ConditionalGGM:
    m = ConditionalGGM()
    m.update()
    return m


def _edge_cases(em: ConditionalGGM, sigma: torch.Tensor, mu: torch.Tensor, count: int,
                tolerance: float = TOLERANCE, version: int = 2):
    """Move the ``count`` μ values nearest their bin edge to just across it (by 0.02 ``tolerance``: δ for
    v2, δ_μ for v3 and v4), as another platform might."""
    dec = em.decisions(sigma, mu, version)
    n = dec.index.size
    order = np.argsort(dec.dist[n:])[:count]
    mu2 = mu.clone().double()
    step = 2.0**-MEAN_GRID_BITS
    for i in order:
        edge = (dec.bins[i] + 0.5 * dec.sign[n + i]) * step
        mu2[0, i] = edge + 0.02 * tolerance * dec.sign[n + i] * max(1.0, abs(float(mu[0, i])))
    return dec, mu2.float()


@pytest.mark.parametrize("flips", [1, 2, 3, 4])
def test_side_stream_corrects_decisions_across_an_edge(em, flips):
    """One wrong decision per step is always corrected; 2..4 by the ranked search (best effort)."""
    sigma, mu = _random_step(20000, seed=flips)
    dec, mu2 = _edge_cases(em, sigma, mu, flips)
    other = em.decisions(sigma, mu2, 2)
    assert int((other.bins != dec.bins).sum()) == flips  # the other platform decides differently
    side = SideWriter()
    em.write_side(7, dec, side)
    reader = SideReader(side.finish())
    got = em.read_side(7, other, reader)
    reader.finish()
    assert np.array_equal(got.index, dec.index) and np.array_equal(got.bins, dec.bins)


def test_side_stream_scale_index_flip(em):
    sigma, mu = _random_step(5000, seed=9)
    table = em.scale_table.double()
    sigma2 = sigma.clone()
    sigma[0, 0] = float(table[20]) * (1 - 1e-5)  # just below a boundary: index 20
    sigma2[0, 0] = float(table[20]) * (1 + 1e-5)  # just above: index 21
    dec, other = em.decisions(sigma, mu, 2), em.decisions(sigma2, mu, 2)
    assert dec.index[0] == 20 and other.index[0] == 21
    side = SideWriter()
    em.write_side(3, dec, side)
    got = em.read_side(3, other, SideReader(side.finish()))
    assert np.array_equal(got.index, dec.index)


def test_deviation_beyond_tolerance_is_refused(em):
    sigma, mu = _random_step(3000, seed=5)
    dec = em.decisions(sigma, mu, 2)
    n = dec.index.size
    i = int(np.argmin(np.where(dec.dist[n:] > 0.1 * 2.0**-MEAN_GRID_BITS, dec.dist[n:], np.inf)))
    mu2 = mu.clone()
    mu2[0, i] = (dec.bins[i] + dec.sign[n + i]) * 2.0**-MEAN_GRID_BITS  # a whole bin away
    side = SideWriter()
    em.write_side(2, dec, side)
    with pytest.raises(FormatError, match="cannot resolve"):
        em.read_side(2, em.decisions(sigma, mu2, 2), SideReader(side.finish()))


def test_side_reader_refuses_truncation_and_trailing_bytes():
    w = SideWriter()
    w.write(5, 3)
    w.write(1000, 13)
    data = w.finish()
    r = SideReader(data)
    assert (r.read(3), r.read(13)) == (5, 1000)
    r.finish()
    with pytest.raises(FormatError, match="truncated"):
        SideReader(data[:1]).read(16)
    r = SideReader(data + b"\x00")
    r.read(16)
    with pytest.raises(FormatError, match="trailing"):
        r.finish()


def test_decisions_follow_the_shared_rules(em):
    sigma, mu = _random_step(4000, seed=11)
    table = em.scale_table
    sigma[0, :60] = table  # exactly on the boundaries
    sigma[0, 60] = float("nan")
    mu[0, :50] = (torch.arange(50) - 25.0) / 64  # exactly on bin edges (half-integers of μ·32)
    dec = em.decisions(sigma, mu, 2)
    assert np.array_equal(dec.index, em.scale_index(sigma).reshape(-1).numpy())
    assert np.array_equal(dec.bins, em.mean_bins(mu).reshape(-1).numpy().astype(np.int64))
    assert torch.equal(em.mean_grid(mu), em.mean_bins(mu) / 2**MEAN_GRID_BITS)


def test_side_stream_with_many_near_edge_decisions(em):
    """A large step (hundreds of decisions within 2.2 δ of an edge) still gets a separating syndrome."""
    sigma, mu = _random_step(200000, seed=13)
    dec = em.decisions(sigma, mu, 2)
    assert int((dec.dist < 2.2 * TOLERANCE).sum()) > 600
    for step in range(1, 12):
        side = SideWriter()
        em.write_side(step, dec, side)
        assert em.read_side(step, dec, SideReader(side.finish())) is dec


# -- the side stream of format 3 (also that of 4; the decisions below use the default version, 4) -----


def _v3_roundtrip(em: ConditionalGGM, steps: list[tuple[int, object]], decoder_views: list[object]) -> list:
    """Write the v3 side stream of ``steps`` [(step, Decisions)], read it back against ``decoder_views``."""
    writer = SideWriterV3(em)
    for step, dec in steps:
        em.write_side(step, dec, writer)
    reader = SideReaderV3(writer.finish())
    got = [em.read_side(step, view, reader) for (step, _), view in zip(steps, decoder_views, strict=True)]
    reader.finish()
    return got


@pytest.mark.parametrize("flips", [0, 1, 2, 3, 4])
def test_v3_side_stream_corrects_decisions_across_an_edge(em, flips):
    """One wrong decision per step is always corrected; 2..4 by the ranked search (best effort)."""
    sigma, mu = _random_step(20000, seed=flips)
    dec, mu2 = _edge_cases(em, sigma, mu, flips, MEAN_TOLERANCE, SIDE_FORMAT)
    other = em.decisions(sigma, mu2)
    assert int((other.bins != dec.bins).sum()) == flips  # the other platform decides differently
    quiet = em.decisions(*_random_step(5000, seed=40 + flips))
    (got, same) = _v3_roundtrip(em, [(7, dec), (8, quiet)], [other, quiet])
    assert np.array_equal(got.index, dec.index) and np.array_equal(got.bins, dec.bins)
    assert same is quiet


def test_v3_side_stream_scale_index_flip(em):
    sigma, mu = _random_step(5000, seed=9)
    table = em.scale_table.double()
    sigma2 = sigma.clone()
    sigma[0, 0] = float(table[20]) * (1 - 0.1 * SCALE_TOLERANCE)  # just below a boundary: index 20
    sigma2[0, 0] = float(table[20]) * (1 + 0.1 * SCALE_TOLERANCE)  # just above: index 21
    dec, other = em.decisions(sigma, mu), em.decisions(sigma2, mu)
    assert dec.index[0] == 20 and other.index[0] == 21
    (got,) = _v3_roundtrip(em, [(3, dec)], [other])
    assert np.array_equal(got.index, dec.index)


@pytest.mark.parametrize(("seed", "version", "coded_bytes"), [(0, 3, 0), (1, 3, 0), (2, 3, 0), (3, 5, 10**6)])
def test_v3_every_single_flip_is_resolved_even_at_the_worst_deviation(em, seed, version, coded_bytes):
    """The guarantee, exhaustively for a step: whichever decision within δ of an edge goes wrong, and even
    when every other decision has moved a full δ towards its edge (so that the decoder's tie-break is as
    hard as it gets), the decoder flips exactly that one. Format 5 with a large file: the widest μ band."""
    sigma, mu = _random_step(30000, seed=100 + seed)
    dec = em.decisions(sigma, mu)
    writer = SideWriterV3(em, version)
    em.write_side(5, dec, writer)
    data = writer.finish(coded_bytes)
    band, steps = writer.choose_band(coded_bytes)
    assert band == (3 if version == 5 else 0)
    st = steps[0]
    reader = SideReaderV3(data, version)
    h, salt, syn = reader.read_step(dec.vector.size)
    assert reader.mean_tolerance == MEAN_TOLERANCE * 2**band
    w = _weights_v3(5, salt, dec.vector.size)
    assert syn == _xor_syndrome(w, dec.vector) & ((1 << h) - 1)
    nd = st.nd
    cand = np.flatnonzero(nd < 1.0)
    assert cand.size > 50
    worst = np.maximum(nd - 1.0, 0.0).astype(np.float32)
    for i in cand:
        d = dec.vector.copy()
        d[i] += dec.sign[i]
        sign = dec.sign.copy()
        sign[i] = -sign[i]
        view = dec.with_vector(d)
        view.sign = sign
        nd_i = worst.copy()
        nd_i[i] = 1.0 - nd[i]  # crossed the edge by the full tolerance
        got = em._resolve_v3(5, view, h, salt, syn, nd=nd_i)
        assert np.array_equal(got.vector, dec.vector), i
    # the encoder's separation: confusable pairs (normalised distances summing to ≤ PAIR_BAND) differ in
    # the low h bits of their weights
    near = np.flatnonzero(nd < PAIR_BAND)
    low = w[near] & np.uint64((1 << h) - 1)
    for a in range(near.size):
        clash = (low == low[a]) & (nd[near] + nd[near[a]] <= PAIR_BAND)
        clash[a] = False
        assert not clash.any()


def test_v3_deviation_beyond_tolerance_is_refused(em):
    sigma, mu = _random_step(3000, seed=5)
    dec = em.decisions(sigma, mu)
    n = dec.index.size
    i = int(np.argmin(np.where(dec.dist[n:] > 0.1 * 2.0**-MEAN_GRID_BITS, dec.dist[n:], np.inf)))
    mu2 = mu.clone()
    mu2[0, i] = (dec.bins[i] + dec.sign[n + i]) * 2.0**-MEAN_GRID_BITS  # a whole bin away
    # refused here, or (a chance match of the short syndrome in the best-effort multi-flip search) decisions
    # that are not the encoder's, which the latent checksum refuses in a real decode
    try:
        (got,) = _v3_roundtrip(em, [(2, dec)], [em.decisions(sigma, mu2)])
    except FormatError as exc:
        assert "cannot resolve" in str(exc)
    else:
        assert not np.array_equal(got.vector, dec.vector)
    # a whole-bin error on a larger step (a wider syndrome): refused
    sigma, mu = _random_step(30000, seed=6)
    dec = em.decisions(sigma, mu)
    n = dec.index.size
    i = int(np.argmin(np.where(dec.dist[n:] > 0.1 * 2.0**-MEAN_GRID_BITS, dec.dist[n:], np.inf)))
    mu2 = mu.clone()
    mu2[0, i] = (dec.bins[i] + dec.sign[n + i]) * 2.0**-MEAN_GRID_BITS
    with pytest.raises(FormatError, match="cannot resolve"):
        _v3_roundtrip(em, [(2, dec)], [em.decisions(sigma, mu2)])


def test_v3_side_reader_refuses_truncation_trailing_bytes_and_runaway_indexes(em):
    sigma, mu = _random_step(8000, seed=21)
    dec = em.decisions(sigma, mu)
    writer = SideWriterV3(em)
    em.write_side(4, dec, writer)
    data = writer.finish()
    with pytest.raises(FormatError, match="truncated"):
        em.read_side(4, dec, SideReaderV3(data[:1]))
    reader = SideReaderV3(data + b"\x00")
    em.read_side(4, dec, reader)
    with pytest.raises(FormatError, match="trailing"):
        reader.finish()
    with pytest.raises(FormatError, match="corrupt|truncated"):
        em.read_side(4, dec, SideReaderV3(b"\x07" + b"\xff" * 40))


def test_v3_side_stream_with_many_near_edge_decisions(em):
    """A large step (hundreds of confusable near-edge decisions) still gets a separating syndrome."""
    sigma, mu = _random_step(200000, seed=13)
    dec = em.decisions(sigma, mu)
    assert int((em.normalized(dec) < PAIR_BAND).sum()) > 600
    steps = [(step, dec) for step in range(1, 12)]
    assert all(got is dec for got in _v3_roundtrip(em, steps, [dec] * 11))


def test_v4_mean_band_follows_sigma(em):
    """Format 4 measures μ's distance to its bin edge against max(1, σ, |μ|): a small μ of a wide
    distribution that another platform moves across its edge by more than δ_μ but less than δ_μ·σ is
    corrected under v4; under v3 it lies outside the band (refused, or not the encoder's decisions)."""
    sigma, mu = _random_step(20000, seed=31)
    sigma[0, 0] = 20.0
    edge = 0.5 * 2.0**-MEAN_GRID_BITS  # between bins 0 and 1
    mu[0, 0] = edge - 0.2 * MEAN_TOLERANCE * 20
    mu2 = mu.clone()
    mu2[0, 0] = edge + 0.2 * MEAN_TOLERANCE * 20
    n = sigma.numel()
    for version in (4, 3):
        dec, other = em.decisions(sigma, mu, version), em.decisions(sigma, mu2, version)
        assert dec.bins[0] == 0 and other.bins[0] == 1
        assert int((other.bins != dec.bins).sum()) == 1
        distance = float(em.normalized(dec)[n])
        if version == 4:
            assert distance < 0.25
            (got,) = _v3_roundtrip(em, [(6, dec)], [other])
            assert np.array_equal(got.vector, dec.vector)
        else:
            assert distance > 3.5
            try:
                (got,) = _v3_roundtrip(em, [(6, dec)], [other])
            except FormatError as exc:
                assert "cannot resolve" in str(exc)
            else:
                assert not np.array_equal(got.vector, dec.vector)


def test_v3_side_stream_is_smaller_than_v2(crop):
    model = load_model("hpcm-tiny", quality=3)
    sizes = {version: len(model.compress(crop, format_version=version)["strings"][2]) for version in (2, 3)}
    assert sizes[3] < 0.75 * sizes[2]


def test_coding_version_is_an_argument_not_module_state(crop):
    """The format's rules travel with the call: the entropy model has no coding-format attribute to switch,
    a v1 pass and a v3 pass of one model interleave, and an unknown version is refused."""
    model = load_model("hpcm-tiny", quality=3)
    em = model.entropy_estimation
    assert not hasattr(em, "side_format") and not hasattr(em, "coding_format")
    assert em.grid_bits(1) is None and em.grid_bits(2) == em.grid_bits(3) == MEAN_GRID_BITS
    v1 = model.compress(crop, format_version=1)
    v3 = model.compress(crop, format_version=3)
    assert len(v1["strings"]) == 2 and len(v3["strings"]) == 3
    assert torch.equal(model.decompress_latent(v3["strings"], v3["shape"], format_version=3),
                       eval_latent(model, crop))
    with torch.no_grad():
        a = model(crop, training=False, format_version=1)["x_hat"]
        b = model(crop, training=False)["x_hat"]
    assert not torch.equal(a, b)  # the official μ and the grid μ do differ
    with pytest.raises(ValueError, match="unknown coding version"):
        em.grid_bits(6)
    with pytest.raises(ValueError, match="no side stream"):
        em.side_writer(1)


def _module_state(model) -> dict[str, str]:
    """Every plain attribute of every submodule (not parameters, buffers or children), as text."""
    skip = {"_parameters", "_buffers", "_modules", "training"}
    return {f"{name}.{k}": repr(v) for name, m in model.named_modules() for k, v in vars(m).items()
            if k not in skip and not k.startswith("_") and not isinstance(v, torch.Tensor)}


def test_decoding_leaves_no_state_on_the_model(crop):
    """A decode whose side stream corrects decisions reports them in its result (and ``decode``'s
    ``times.extra``) and changes no attribute of the model: per-call state travels with the call."""
    model = load_model("hpcm-tiny", quality=3)
    image = (crop[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    data, _, _ = encode(model, image)
    other = perturbed("hpcm-tiny", 6e-6)
    other.update()
    before = _module_state(other)
    _, _, times = decode(data, other)
    assert times.extra["corrections"] > 0
    assert _module_state(other) == before
    _, _, times = decode(data, model)
    assert times.extra["corrections"] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v3_width_search_equals_pair_enumeration(seed):
    """The encoder's O(n log n) width search (binary search over h) against enumerating every confusable
    pair: random distances (ties included) and weights with few distinct low bits, so that long shared runs
    occur."""
    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 5, 40, 300):
        a = rng.choice(np.linspace(0, PAIR_BAND, 50, dtype=np.float32), n).astype(np.float32)  # unsorted
        for spread in (4, 1 << 12, 1 << 40):
            low = rng.integers(0, spread, n, dtype=np.uint64)
            w = (rng.integers(0, 1 << 62, n, dtype=np.uint64) << np.uint64(20)) ^ low
            if n > 3:
                w[3] = w[1]  # equal weights: no width separates them
            assert _confusable_width(w, a) == _confusable_width_pairs(w, a), (n, spread)


def test_v5_wide_band_decodes_what_the_narrow_band_cannot(crop, monkeypatch):
    """Format 5 with the widest μ band (forced here: a budget of the whole file) corrects μ deviations of
    ~4x format 4's δ_μ that format 4 refuses; the decoder takes the band from the side stream."""
    import hpcm.entropy.conditional as C

    model = load_model("hpcm-tiny", quality=3)
    monkeypatch.setattr(C, "BAND_SHARE", 1.0)
    enc5 = model.compress(crop, format_version=5)
    enc4 = model.compress(crop, format_version=4)
    assert enc5["strings"][:2] == enc4["strings"][:2]  # the band changes only the side stream
    reader = model.entropy_estimation.side_reader(enc5["strings"][2], 5)
    reader.read_step(1)
    assert reader.mean_tolerance == MEAN_TOLERANCE * 8
    other = perturbed("hpcm-tiny", 2.5e-5, seed=1)
    latent = other.decode_latent(enc5["strings"], enc5["shape"], format_version=5)
    assert torch.equal(latent.y_hat, eval_latent(model, crop))
    assert latent.corrections > 0
    with pytest.raises(FormatError, match="tolerance"):
        perturbed("hpcm-tiny", 2.5e-5, seed=1).decode_latent(enc4["strings"], enc4["shape"], format_version=4)
