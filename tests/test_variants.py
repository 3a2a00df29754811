"""HPCM × RWKV phases and multi-reference presets as configurations of one model (tiny widths, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import hpcm
from hpcm.cli.main import main as cli_main
from hpcm.layers.attention import CrossAttentionCell
from hpcm.layers.memory_bank import HierarchicalMemoryManager
from hpcm.layers.priors import SpatialPrior
from hpcm.layers.rwkv import RWKVContextCell, RWKVFusionNet, RWKVSpatialPrior
from hpcm.models.hpcm import LikelihoodCoder
from hpcm.models.variants import HPCM_MultiRef_Phase2, HPCM_Phase1, HPCM_Phase2, HPCM_Phase3, HPCM_Phase4

PHASE_PRESETS = ["hpcm-tiny"] + [f"hpcm-phase{i}-tiny" for i in range(1, 5)]
MULTIREF_PRESETS = ["hpcm-multiref-phase1-tiny", "hpcm-multiref-phase2-tiny"]

# component types each phase must have: (attn_s1, attn_s2, attn_s3, context_net item, prior s12, prior s3)
CROSS, RWKV = CrossAttentionCell, RWKVContextCell
EXPECTED = {
    "hpcm-tiny": (CROSS, CROSS, CROSS, torch.nn.Conv2d, SpatialPrior),
    "hpcm-phase1-tiny": (CROSS, CROSS, RWKV, torch.nn.Conv2d, SpatialPrior),
    "hpcm-phase2-tiny": (RWKVContextCell, RWKVContextCell, RWKVContextCell, torch.nn.Conv2d, SpatialPrior),
    "hpcm-phase3-tiny": (RWKVContextCell, RWKVContextCell, RWKVContextCell, RWKVFusionNet, SpatialPrior),
    "hpcm-phase4-tiny": (RWKVContextCell, RWKVContextCell, RWKVContextCell, RWKVFusionNet, RWKVSpatialPrior),
}


@pytest.mark.parametrize("name", PHASE_PRESETS)
def test_phase_component_types(name):
    model = hpcm.create_model(name)
    s1, s2, s3, net, prior = EXPECTED[name]
    assert type(model.attn_s1) is s1 and type(model.attn_s2) is s2 and type(model.attn_s3) is s3
    assert all(type(m) is net for m in model.context_net) and len(model.context_net) == 2
    assert isinstance(model.y_spatial_prior_s1_s2, prior) and isinstance(model.y_spatial_prior_s3, prior)
    assert model.memory is None


def test_phase2_hidden_rates_and_phase4_prior_depths():
    model = hpcm.create_model("hpcm-phase4-tiny")
    assert [c.hidden_rate for c in model.config.cells] == [2, 3, 4]
    assert model.config.prior_s12.depths == (2, 1) and model.config.prior_s3.depths == (3, 2)
    assert len(model.y_spatial_prior_s1_s2.branch_1) == 2 and len(model.y_spatial_prior_s3.branch_1) == 3


def test_base_width_presets_and_seed_constructors_match_registry():
    for i, ctor in enumerate((HPCM_Phase1, HPCM_Phase2, HPCM_Phase3, HPCM_Phase4), start=1):
        cfg = hpcm.models.registry.get_config(f"hpcm-phase{i}")
        assert (cfg.M, cfg.N) == (320, 256)
        small = ctor(M=64, N=64)
        assert small.config.cells == cfg.cells and small.config.context_nets == cfg.context_nets
        assert (small.M, small.N) == (64, 64)
    mr = HPCM_MultiRef_Phase2(M=64, N=64, max_refs_s3=5, topk_refs_s3=3)
    assert isinstance(mr.memory, HierarchicalMemoryManager)
    assert mr.config.memory.max_refs_s3 == 5 and mr.config.memory.enabled_scales == ("s1", "s2", "s3")
    assert mr.config.to_dict()["memory"]["enabled_scales"] == ["s1", "s2", "s3"]
    assert HPCM_MultiRef_Phase2(M=64, N=64, enable_multiref=False).memory is None
    with pytest.raises(TypeError):
        HPCM_MultiRef_Phase2(M=64, N=64, max_refs_s4=1)


def test_parameter_counts_across_phases():
    counts = {n: sum(p.numel() for p in hpcm.create_model(n).parameters()) for n in PHASE_PRESETS}
    base = hpcm.create_model("hpcm-tiny")
    common = sum(p.numel() for n, p in base.named_parameters() if not n.startswith(("attn_", "context_net")))
    # the transforms, adaptors and hyper parts are shared by every phase up to phase 3
    for name in PHASE_PRESETS[:4]:
        params = hpcm.create_model(name).named_parameters()
        assert sum(p.numel() for n, p in params if not n.startswith(("attn_", "context_net"))) == common
    assert len(set(counts.values())) == len(counts)  # every phase changes the parameter count
    mr = hpcm.create_model("hpcm-multiref-phase2-tiny")
    extra = sum(p.numel() for p in mr.memory.parameters())
    assert sum(p.numel() for p in mr.parameters()) == counts["hpcm-tiny"] + extra > counts["hpcm-tiny"]


@pytest.mark.parametrize("name", PHASE_PRESETS + ["hpcm-multiref-phase2-tiny"])
@pytest.mark.parametrize("size", [256, 512])
def test_forward_shapes(name, size):
    model = hpcm.create_model(name).eval()
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        out = model(x, training=False)
    assert out["x_hat"].shape == x.shape
    assert out["likelihoods"]["y"].shape == (1, model.M, size // 16, size // 16)
    assert out["likelihoods"]["z"].shape == (1, model.N, size // 64, size // 64)
    assert torch.isfinite(out["x_hat"]).all()


def _kodak_crop(kodak_dir, h=192, w=256) -> torch.Tensor:
    img = np.asarray(Image.open(kodak_dir / "kodim23.png").convert("RGB"))[:h, :w]
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0


def _randomise_memory_output(model) -> None:
    """Give the bank's zero-initialised fusion projections random weights so the bank acts."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.memory.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name", PHASE_PRESETS + MULTIREF_PRESETS)
def test_exact_roundtrip_on_kodak(name, kodak_dir):
    torch.manual_seed(0)
    model = hpcm.create_model(name).eval()
    if model.memory is not None:
        _randomise_memory_output(model)
    x = _kodak_crop(kodak_dir)
    with torch.no_grad():
        y = model.g_a(x)
        z_hat = torch.round(model.h_a(y) - model.means_hyper) + model.means_hyper
        y_hat = model.context_pass(model.h_s(z_hat), LikelihoodCoder(False), y)
        enc = model.compress(x)
        decoded = model.decompress_latent(enc["strings"], enc["shape"])
    assert torch.equal(decoded, y_hat)


def test_memory_bank_changes_entropy_parameters_when_active(kodak_dir):
    model = hpcm.create_model("hpcm-multiref-phase2-tiny").eval()
    x = _kodak_crop(kodak_dir, 128, 128)
    with torch.no_grad():
        before = model(x)["likelihoods"]["y"]
        _randomise_memory_output(model)
        after = model(x)["likelihoods"]["y"]
    assert not torch.equal(before, after)


def test_describe_cli(capsys):
    assert cli_main(["describe", "hpcm-phase4-tiny"]) == 0
    out = capsys.readouterr().out
    assert "RWKVSpatialPrior" in out and "phase4 ×" in out
    assert cli_main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("hpcm-multiref-phase2-tiny ") for line in lines)
    tiny = next(line for line in lines if line.startswith("hpcm-tiny "))
    assert "[trained weights: quality 3]" in tiny
    assert not any("trained weights" in line for line in lines if line.startswith("hpcm-base "))
    assert cli_main(["describe", "no-such-model"]) == 1


def test_migration_phase3_to_phase4_copies_all_but_spatial_priors():
    src = hpcm.create_model("hpcm-phase3-tiny")
    dst = hpcm.create_model("hpcm-phase4-tiny")
    report = hpcm.migrate(src.state_dict(), dst)
    prior_prefixes = ("y_spatial_prior_s1_s2.", "y_spatial_prior_s3.")
    assert report.initialised and all(k.startswith(prior_prefixes) for k in report.initialised)
    assert report.dropped and all(k.startswith(prior_prefixes) for k in report.dropped)
    # everything outside the priors is copied; inside them at most the final 1x1 3M -> 2M projection,
    # when it has the same name and shape in the DWConvRB and the RWKV prior
    assert {k for k in dst.state_dict() if not k.startswith(prior_prefixes)} <= set(report.copied)
    finals = {
        f"{name}.branch_2.{len(getattr(dst, name).branch_2) - 1}.{p}"
        for name in ("y_spatial_prior_s1_s2", "y_spatial_prior_s3")
        for p in ("weight", "bias")
    }
    assert {k for k in report.copied if k.startswith(prior_prefixes)} <= finals
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    for key in report.copied:
        assert torch.equal(src_sd[key], dst_sd[key])
    assert len(report.copied) + len(report.initialised) == len(dst_sd)


def test_config_overrides_and_unknown_fields_are_refused():
    from hpcm.layers.memory_bank import MemoryBankConfig
    from hpcm.models.registry import get_config

    cfg = get_config("hpcm-tiny", M=48, cells=[{"kind": "cross", "window": 4, "heads": 8}] * 3)
    assert cfg.M == 48 and cfg.cells[0].window == 4 and cfg.N == get_config("hpcm-tiny").N
    with pytest.raises(ValueError, match=r"unknown HPCMConfig fields: \['bogus'\]"):
        hpcm.create_model("hpcm-tiny", bogus=1)
    with pytest.raises(ValueError, match=r"unknown MemoryBankConfig fields: \['nope'\]"):
        MemoryBankConfig.from_dict({"nope": 1})
