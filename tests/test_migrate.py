"""Tests for hpcm.models.migrate: weight migration, freezing and learning-rate groups."""

import pytest
import torch
from torch import nn

from hpcm.models.migrate import freeze, freeze_except, matches, migrate, param_groups, parse_lr_rules


class Src(nn.Module):
    def __init__(self):
        super().__init__()
        self.g_a = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1))
        self.attn_s3 = nn.Linear(8, 8)
        self.old_only = nn.Linear(4, 4)
        self.register_buffer("beta", torch.tensor(1.5))


class Dst(nn.Module):
    def __init__(self):
        super().__init__()
        self.g_a = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 1))  # second conv widened
        self.attn_s3 = nn.Sequential(nn.Linear(8, 8))  # replaced by a new module
        self.attn_s3_rwkv = nn.Linear(8, 8)
        self.register_buffer("beta", torch.tensor(0.0))


def test_migrate_copies_matching_and_reports_the_rest():
    src, dst = Src(), Dst()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    rep = migrate(src.state_dict(), dst)
    assert sorted(rep.copied) == ["beta", "g_a.0.bias", "g_a.0.weight"]
    assert torch.equal(dst.g_a[0].weight, src.g_a[0].weight)
    assert dst.beta.item() == 1.5
    # shape mismatch: not copied, reported in both lists
    mism = {k: (a, b) for k, a, b in rep.mismatched}
    assert mism["g_a.1.weight"] == ((8, 8, 1, 1), (16, 8, 1, 1))
    assert "g_a.1.weight" in rep.initialised
    assert torch.equal(dst.g_a[1].weight, before["g_a.1.weight"])
    assert "attn_s3_rwkv.weight" in rep.initialised and "attn_s3.0.weight" in rep.initialised
    assert sorted(rep.dropped) == ["attn_s3.bias", "attn_s3.weight", "old_only.bias", "old_only.weight"]
    # every destination key is either copied or initialised, never both
    assert set(rep.copied) | set(rep.initialised) == set(dst.state_dict())
    assert not set(rep.copied) & set(rep.initialised)
    text = str(rep)
    assert "3 copied" in text and "g_a.1.weight: (8, 8, 1, 1) -> (16, 8, 1, 1)" in text
    assert not rep.ok


def test_migrate_identical_and_module_prefix():
    a, b = Src(), Src()
    sd = {"module." + k: v for k, v in a.state_dict().items()}
    rep = migrate(sd, b)
    assert rep.ok and not rep.dropped
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


def test_pattern_matching():
    assert matches("attn_s3.0.weight", "attn_s3")
    assert matches("attn_s3.0.weight", "attn_s*")
    assert not matches("attn_s3_rwkv.weight", "attn_s3")
    assert matches("a.blocks.0.att.decay", "*.decay")
    assert matches("a.blocks.0.att.decay", "re:(decay|boost)$")
    assert not matches("a.decayed", "re:decay$")


def test_freeze_and_freeze_except():
    m = Dst()
    frozen = freeze(m, ["g_a"])
    assert sorted(frozen) == ["g_a.0.bias", "g_a.0.weight", "g_a.1.bias", "g_a.1.weight"]
    assert all(not p.requires_grad for p in m.g_a.parameters())
    assert all(p.requires_grad for p in m.attn_s3.parameters())
    m2 = Dst()
    frozen2 = freeze_except(m2, ["attn_s3*"])
    trainable = sorted(n for n, p in m2.named_parameters() if p.requires_grad)
    assert trainable == ["attn_s3.0.bias", "attn_s3.0.weight", "attn_s3_rwkv.bias", "attn_s3_rwkv.weight"]
    assert len(frozen2) == 4


def test_param_groups_first_rule_wins_and_partition():
    m = Dst()
    freeze(m, ["g_a.0"])
    rules = parse_lr_rules(["*rwkv*=0.5", "re:bias$=0.1", "attn_s3=2"])
    groups = param_groups(m, 1e-4, rules)
    by_name = {g["name"]: g for g in groups}
    assert by_name["*rwkv*"]["param_names"] == ["attn_s3_rwkv.weight", "attn_s3_rwkv.bias"]
    assert by_name["*rwkv*"]["lr"] == pytest.approx(5e-5)
    assert sorted(by_name["re:bias$"]["param_names"]) == ["attn_s3.0.bias", "g_a.1.bias"]
    assert by_name["attn_s3"]["param_names"] == ["attn_s3.0.weight"]
    assert by_name["default"]["param_names"] == ["g_a.1.weight"]
    names = [n for g in groups for n in g["param_names"]]
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(trainable) and len(names) == len(set(names))
    opt = torch.optim.Adam(groups, lr=1e-4)
    assert len(opt.param_groups) == 4


def test_parse_lr_rules_errors():
    with pytest.raises(ValueError):
        parse_lr_rules(["nofactor"])
    with pytest.raises(ValueError):
        parse_lr_rules(["x=abc"])
    assert parse_lr_rules(["a=b=0.5"]) == [("a=b", 0.5)]
