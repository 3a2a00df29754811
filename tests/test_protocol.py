"""The CodingModel protocol: what the codec, trainer and evaluator read from a model, defined once."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hpcm.codec.api import compress_image
from hpcm.errors import HPCMError
from hpcm.models import protocol
from hpcm.models.registry import create_model

SRC = Path(__file__).resolve().parents[1] / "src" / "hpcm"


def test_hpcm_satisfies_the_protocol():
    model = create_model("hpcm-tiny")
    assert isinstance(model, protocol.CodingModel)
    assert protocol.size_multiple(model) == 64
    assert protocol.model_device(model) == torch.device("cpu")
    assert protocol.weights_info(model) == {} and protocol.model_preset(model) is None
    assert protocol.model_config_dict(model) == model.config.to_dict()
    assert not protocol.is_variable_rate(model)
    model.preset = "hpcm-tiny"
    assert protocol.model_preset(model) == "hpcm-tiny"
    model.weights_info = {"preset": "from-weights"}
    info = protocol.weights_info(model)
    info["preset"] = "changed"  # a copy
    assert protocol.model_preset(model) == "from-weights"


def test_defaults_for_a_bare_module():
    bare = nn.Identity()
    assert protocol.size_multiple(bare) == protocol.DEFAULT_SIZE_MULTIPLE == 1
    assert protocol.model_device(bare) == torch.device("cpu")
    assert protocol.weights_info(bare) == {} and protocol.model_preset(bare) is None
    assert protocol.model_config_dict(bare) is None and not protocol.is_variable_rate(bare)


def test_codec_refuses_a_size_multiple_the_format_cannot_store():
    model = create_model("hpcm-tiny").eval()
    odd = type("Odd", (type(model),), {"size_multiple": 32})(model.config)
    with pytest.raises(HPCMError, match="multiple of 64"):
        compress_image(odd, np.zeros((64, 64, 3), np.uint8))


def test_readers_use_the_protocol():
    """No module outside protocol.py reads these attributes with a getattr default of its own."""
    pattern = re.compile(r'getattr\(\w+, "(size_multiple|weights_info|preset|variable_rate)"')
    offenders = [
        f"{p.relative_to(SRC)}:{i}"
        for p in SRC.rglob("*.py")
        if p.name != "protocol.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
