"""JSON Schema for CompressAI's ``eval_model`` / ``bench`` result files, and a validator.

Aggregate file (what ``compressai.utils.plot`` reads)::

    {"name": str, "description": str,
     "results": {"bpp": [..], "psnr-rgb": [..], "ms-ssim-rgb": [..], "encoding_time": [..], ...}}

one list entry per RD point. Extra top-level keys are allowed (``quality``, ``meta``, and our ``per_image``),
as CompressAI's tools ignore them. Per-image records follow CompressAI's ``--per-image`` files:
``{"source": stem, "name": str, "description": str, "results": {<same keys, scalars>}}``.
Non-finite values (a lossless image's PSNR) are written as JSON ``Infinity`` like Python's ``json`` does,
so numbers are typed as "number" (Python's json module parses ``Infinity`` to a float).

``jsonschema`` is not a dependency of hpcm, so :func:`check_schema` implements the subset of JSON Schema
(draft 2020-12) that :data:`AGGREGATE_SCHEMA` uses: ``type``, ``required``, ``properties``,
``additionalProperties``, ``items``, ``minItems``, ``minLength``, ``minimum``, ``maximum``, ``anyOf``
and local ``$ref``. The tests cross-check it against ``jsonschema`` when that package is installed.
"""

from __future__ import annotations

from typing import Any

DISTORTION_KEYS = ("psnr-rgb", "ms-ssim-rgb", "ms-ssim-db-rgb")

_NUMBER_LIST = {"type": "array", "items": {"type": ["number", "null"]}}

AGGREGATE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "hpcm:compressai-eval-model",
    "title": "CompressAI eval_model / bench results (aggregate)",
    "type": "object",
    "required": ["name", "description", "results"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "quality": {"type": "array", "items": {"type": ["number", "string", "null"]}},
        "meta": {"type": "object"},
        "results": {
            "type": "object",
            "required": ["bpp"],
            "anyOf": [{"required": [k]} for k in DISTORTION_KEYS],
            "properties": {
                "bpp": {"type": "array", "minItems": 1, "items": {"type": "number", "minimum": 0}},
                "psnr-rgb": _NUMBER_LIST,
                "ms-ssim-rgb": {
                    "type": "array",
                    "items": {"type": ["number", "null"], "maximum": 1},
                },
                "ms-ssim-db-rgb": _NUMBER_LIST,
                "encoding_time": {"type": "array", "items": {"type": "number", "minimum": 0}},
                "decoding_time": {"type": "array", "items": {"type": "number", "minimum": 0}},
            },
            "additionalProperties": _NUMBER_LIST,
        },
        "per_image": {"type": "array", "items": {"$ref": "#/$defs/per_image"}},
    },
    "$defs": {
        "per_image": {
            "type": "object",
            "required": ["source", "name", "results"],
            "properties": {
                "source": {"type": "string"},
                "name": {"type": "string"},
                "description": {"type": "string"},
                "quality": {"type": ["number", "string", "null"]},
                "results": {
                    "type": "object",
                    "required": ["bpp"],
                    "properties": {"bpp": {"type": "number", "minimum": 0}},
                    "additionalProperties": {"type": ["number", "null"]},
                },
            },
        }
    },
}


class SchemaError(ValueError):
    """A results document does not follow the schema; the message names the offending path."""


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _errors(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    """All violations of ``schema`` by ``value`` (empty list when valid)."""
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref supported, got {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return _errors(value, target, root, path)
    out: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {type(value).__name__}"]
    if "anyOf" in schema and not any(not _errors(value, sub, root, path) for sub in schema["anyOf"]):
        out.append(f"{path}: matches none of {schema['anyOf']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                out += _errors(item, props[key], root, f"{path}.{key}")
            elif extra is False:
                out.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                out += _errors(item, extra, root, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                out += _errors(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        out.append(f"{path}: shorter than {schema['minLength']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: {value} > maximum {schema['maximum']}")
    return out


def check_schema(doc: Any, schema: dict[str, Any] = AGGREGATE_SCHEMA) -> list[str]:
    """Violations of ``schema`` by ``doc`` (the JSON Schema subset documented above); [] when valid."""
    return _errors(doc, schema, schema, "$")


def validate_results(doc: dict[str, Any]) -> None:
    """Raise :class:`SchemaError` unless ``doc`` is a valid aggregate results file.

    Beyond the schema: every ``results`` list (and ``quality``, when present) has the length of ``bpp``.
    """
    errors = check_schema(doc)
    if errors:
        raise SchemaError("; ".join(errors[:5]))
    n = len(doc["results"]["bpp"])
    for key, values in doc["results"].items():
        if len(values) != n:
            raise SchemaError(f"$.results.{key}: {len(values)} points, bpp has {n}")
    if "quality" in doc and len(doc["quality"]) != n:
        raise SchemaError(f"$.quality: {len(doc['quality'])} entries, bpp has {n}")

