"""The CompressAI eval_model JSON schema accepts every stored anchor and rejects malformed documents."""

import copy
import json

import pytest

from hpcm.eval.schema import AGGREGATE_SCHEMA, SchemaError, check_schema, validate_results


def _anchor_files(shared_dir):
    files = sorted((shared_dir / "anchors" / "kodak").rglob("*.json"))
    files += sorted((shared_dir / "anchors" / "kodak-measured").glob("*.json"))
    return [f for f in files if f.name != "per-image.json"]


def test_all_shared_anchors_validate(shared_dir):
    files = _anchor_files(shared_dir)
    assert len(files) >= 30
    for f in files:
        validate_results(json.loads(f.read_text()))


def test_agrees_with_jsonschema_when_installed(shared_dir):
    jsonschema = pytest.importorskip("jsonschema")
    for f in _anchor_files(shared_dir):
        jsonschema.validate(json.loads(f.read_text()), AGGREGATE_SCHEMA)


@pytest.fixture()
def good(shared_dir):
    return json.loads((shared_dir / "anchors" / "kodak" / "jpeg.json").read_text())


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.pop("name"), "name"),
        (lambda d: d["results"].pop("bpp"), "bpp"),
        (lambda d: d["results"]["bpp"].__setitem__(0, "0.3"), "bpp[0]"),
        (lambda d: d["results"]["bpp"].__setitem__(0, -1.0), "minimum"),
        (lambda d: d["results"]["ms-ssim-rgb"].__setitem__(0, 1.5), "maximum"),
        (lambda d: d["results"]["psnr-rgb"].pop(), "points"),
        (lambda d: d.__setitem__("results", {"bpp": [0.1], "encoding_time": [1.0]}), "none of"),
        (lambda d: d.__setitem__("quality", [1, 2]), "quality"),
        (lambda d: d.__setitem__("per_image", [{"source": "a", "name": "b", "results": {}}]), "bpp"),
    ],
)
def test_rejects_malformed(good, mutate, fragment):
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(SchemaError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        validate_results(bad)


def test_check_schema_lists_every_violation(good):
    bad = copy.deepcopy(good)
    bad.pop("description")
    bad["results"]["bpp"][1] = None
    errors = check_schema(bad)
    assert len(errors) == 2
