"""A new context-cell kind is one class plus one registration, here in this test file alone.

The toy kind is registered below (no library file knows it); the test trains it with the trainer, reads
its config back from the training checkpoint, encodes and decodes an image with it, and ``hpcm describe``
labels it. The registry's own rules (config JSON, older all-fields configs, unknown kinds) follow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hpcm.models import components as C
from hpcm.models.config import HPCMConfig
from hpcm.models.registry import get_config, register_model, unregister_model


class ToyGateCell(nn.Module):
    """``cell(psi, prev) -> new_prev``: prev moved towards psi by a learned per-pixel gate."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Conv2d(2 * dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, psi: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return prev + torch.sigmoid(self.gate(torch.cat((psi, prev), dim=1))) * (psi - prev)


@dataclass(frozen=True)
class ToyGateSpec(C.ComponentSpec):
    hidden: int = 16

    def build(self, dim: int) -> nn.Module:
        return ToyGateCell(dim, self.hidden)

    def label(self) -> str:
        return f"toygate(h{self.hidden})"


TOY_PRESET = "test-toygate-tiny"


@pytest.fixture
def toy_kind():
    """Register the toy cell kind and a preset using it at s3; unregister both afterwards."""
    C.register_component("cell", "toygate")(ToyGateSpec)

    @register_model(TOY_PRESET, "hpcm-tiny with a toy gated cell at s3", baseline="hpcm-tiny")
    def _toy() -> HPCMConfig:
        tiny = get_config("hpcm-tiny")
        return replace(tiny, cells=(*tiny.cells[:2], ToyGateSpec(hidden=8)))

    yield ToyGateSpec
    unregister_model(TOY_PRESET)
    C.unregister_component("cell", "toygate")


def _images(folder, count: int, size: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        smooth = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(smooth).resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")


def test_toy_cell_kind_trains_encodes_and_decodes(toy_kind, tmp_path):
    from hpcm.cli.describe import describe
    from hpcm.codec.api import decode, encode
    from hpcm.models.hpcm import HPCM
    from hpcm.models.registry import create_model
    from hpcm.train.checkpoint import read_checkpoint
    from hpcm.train.config import TrainConfig
    from hpcm.train.trainer import LAST, train

    torch.manual_seed(0)
    model = create_model(TOY_PRESET)
    assert isinstance(model.attn_s3, ToyGateCell) and model.attn_s3.gate[0].out_channels == 8
    before = {k: v.clone() for k, v in model.attn_s3.state_dict().items()}

    _images(tmp_path / "train", 2, 96, seed=1)
    _images(tmp_path / "val", 1, 64, seed=2)
    cfg = TrainConfig.from_dict(dict(
        model=TOY_PRESET, data=[str(tmp_path / "train")], val=str(tmp_path / "val"),
        out=str(tmp_path / "run"), steps=2, batch_size=1, patch_size=64, quality=3, num_workers=0,
        log_every=1, val_every=1000, save_every=1000, progress=False, device="cpu",
    ))
    result = train(cfg, model=model)
    assert result.step == 2 and np.isfinite(result.last_train["loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.attn_s3.state_dict().items())  # it learned

    # the checkpoint's config names the kind; reading it back builds the same model
    _, meta, _ = read_checkpoint(result.run_dir / LAST)
    saved = json.loads(json.dumps(meta["model_config"]))
    assert saved["cells"][2] == {"kind": "toygate", "hidden": 8}
    rebuilt = HPCM(HPCMConfig.from_dict(saved))
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config

    model.eval()
    image = np.array(Image.open(tmp_path / "val" / "0.png").convert("RGB"))
    data, header, _ = encode(model, image, verify=True)  # verify: decoded == eval forward, in-process
    decoded, _, _ = decode(data, rebuilt.eval())
    assert decoded.shape == image.shape and header.recon_crc is not None
    with torch.no_grad():
        ref = model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, training=False)["x_hat"]
    ref8 = (ref.clamp(0, 1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.abs(decoded.astype(int) - ref8.astype(int)).max() <= 1

    text = describe(TOY_PRESET)
    assert "ToyGateCell" in text and "toygate(h8)" in text and "this model" in text


def test_spec_json_roundtrip_and_older_all_fields_configs():
    cfg = get_config("hpcm-phase4-tiny")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["cells"][0] == {"kind": "rwkv", "hidden_rate": 2, "use_checkpoint": False}
    assert data["prior_s3"] == {"kind": "rwkv", "depths": [3, 2], "hidden_rate": 4, "use_checkpoint": False}
    assert HPCMConfig.from_dict(data) == cfg
    # the form written before the kinds had their own specs: every field of the role on every spec
    old_cell = {"heads": 8, "hidden_rate": 4, "kind": "cross", "use_checkpoint": False, "window": 4}
    assert C.spec_from_dict("cell", old_cell) == C.CrossCellSpec(window=4, heads=8)
    old_net = {"hidden_rate": 4, "kind": "conv", "num_blocks": 1, "use_checkpoint": False}
    assert C.spec_from_dict("context_net", old_net) == C.ConvNetSpec()
    assert C.spec_from_dict("prior", {"depths": [1, 1], "hidden_rate": 4}) == C.DWConvPriorSpec(depths=(1, 1))
    with pytest.raises(ValueError, match="unknown cell kind 'nope'"):
        C.spec_from_dict("cell", {"kind": "nope"})
    with pytest.raises(ValueError, match="unknown fields"):
        C.spec_from_dict("cell", {"kind": "cross", "colour": 1})
    with pytest.raises(TypeError, match="expected a cell spec"):
        HPCMConfig(cells=(C.ConvNetSpec(),) * 3)
    with pytest.raises(ValueError, match="not divisible by 7 heads"):
        HPCMConfig(M=64, cells=(C.CrossCellSpec(heads=7),) * 3)


def test_register_component_rules(toy_kind):
    assert C.component_kinds("cell")["toygate"] is ToyGateSpec and ToyGateSpec.role == "cell"
    with pytest.raises(ValueError, match="already registered"):
        C.register_component("cell", "toygate")(ToyGateSpec)
    with pytest.raises(ValueError, match="unknown component role"):
        C.register_component("decoder", "x")
    with pytest.raises(TypeError, match="dataclass subclass of ComponentSpec"):
        C.register_component("cell", "plain")(ToyGateCell)


def test_memory_bank_config_is_typed_and_reads_the_older_dict():
    from hpcm.layers.memory_config import MEMORY_PRESETS, MemoryBankConfig

    cfg = get_config("hpcm-multiref-phase1-light-tiny")
    assert isinstance(cfg.memory, MemoryBankConfig)
    assert cfg.memory == replace(MEMORY_PRESETS["light"], enabled_scales=("s3",))
    # the dict written before HPCMConfig.memory was typed: only the seed-style keyword arguments
    old = {"max_refs_s1": 1, "max_refs_s2": 2, "max_refs_s3": 3, "topk_refs_s1": 1, "topk_refs_s2": 2,
           "topk_refs_s3": 2, "value_resolution": 4, "compress_ratio": 8,
           "enable_hierarchical_transfer": True, "enabled_scales": ["s3"]}
    assert HPCMConfig.from_dict({**cfg.to_dict(), "memory": old}) == cfg
    assert HPCMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_a_kind_without_a_builder_or_a_coder_without_code_cannot_be_made():
    """The bases are abstract: a spec must say how to build its module, a step coder how to code."""
    from hpcm.entropy.conditional import StepCoder
    from hpcm.models.components import ComponentSpec

    @dataclass(frozen=True)
    class NoBuilder(ComponentSpec):
        width: int = 1

    with pytest.raises(TypeError, match="abstract"):
        NoBuilder()
    with pytest.raises(TypeError, match="abstract"):
        type("NoCode", (StepCoder,), {})()
