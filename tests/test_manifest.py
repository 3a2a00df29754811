"""Fresh hpcm-base / hpcm-large parameters equal the official state-dict manifests (spec hpcm.md §9)."""

from __future__ import annotations

import pytest
import torch

from hpcm.models.hpcm import OFFICIAL_TABLE_KEYS
from hpcm.models.registry import create_model

GGM_BUFFERS = [
    "entropy_estimation.beta",
    "entropy_estimation.scale_lower_bound.bound",
    "entropy_estimation.likelihood_lower_bound.bound",
]


def _manifest(path) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        out[key] = tuple(int(v) for v in shape.split(",")) if shape else ()
    return out


@pytest.mark.parametrize(
    "name,tsv,n_params",
    [
        ("hpcm-base", "hpcm_base_state_dict.tsv", 68_505_299),
        ("hpcm-large", "hpcm_large_state_dict.tsv", 89_718_803),
    ],
)
def test_parameters_match_manifest(shared_dir, name, tsv, n_params):
    path = shared_dir / "spec" / tsv
    if not path.exists():
        pytest.skip("manifest not available")
    ref = _manifest(path)
    with torch.device("meta"):  # shapes only; also proves no CUDA is touched
        model = create_model(name)
    params = {k: tuple(p.shape) for k, p in model.named_parameters()}
    buffers = set(ref) - set(params)
    assert buffers == set(OFFICIAL_TABLE_KEYS) | set(GGM_BUFFERS)
    expected = {k: v for k, v in ref.items() if k not in buffers}
    assert params == expected
    assert list(params) == list(expected)  # same order as the official state dict
    assert sum(p.numel() for p in model.parameters()) == n_params
    sd = model.state_dict()
    assert [k for k in sd if k not in params] == GGM_BUFFERS
    for k in GGM_BUFFERS:
        assert tuple(sd[k].shape) == ref[k]


def test_constructs_on_cpu_without_cuda():
    model = create_model("hpcm-tiny")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(p, torch.ones_like(p)) for p in model.adaptive_params_list)
    assert model.entropy_estimation.beta.item() == 1.5


def test_official_table_buffers_are_ignored_on_load():
    model = create_model("hpcm-tiny")
    sd = dict(model.state_dict())
    for key in OFFICIAL_TABLE_KEYS:
        sd[key] = torch.empty(0)
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
