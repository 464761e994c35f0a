"""The study schema: the one place a config's keys, types, allowed values and defaults are written.

`validate_config` checks a config against it and fills every default in place, so the code that
reads a config afterwards reads values, never `.get(key, default)`. The same definitions also
describe per-dataset overrides (`datasets/*/model`, `datasets/*/training`), which must stay
partial: an override that held every default would undo the study-wide settings. So a shared
definition (`definitions/training`) holds no defaults, and the study-wide block that uses it adds
them beside its `$ref` (`training: {$ref, properties: {steps: {default: ...}}}`): any JSON-Schema
default filler, this one or Snakemake's, fills the study-wide block and leaves overrides alone.

Errors come back as one line naming the key path and what is allowed, the first by path, with an
unknown key reported before the required key it was probably meant to be.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from scorebench.errors import ScorebenchError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The schema as a dict (read once per process; callers must not change it)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(SCHEMA_PATH.read_text(), Loader=loader)


def block_defaults(name: str) -> dict:
    """{key: default} of a study-wide block (e.g. "training"), as written in the schema."""
    props = load_schema()["properties"][name]["properties"]
    return {key: copy.deepcopy(sub["default"]) for key, sub in props.items() if "default" in sub}


def validate_config(config: dict) -> dict:
    """Check a config against the schema and fill its defaults (in place); returns the config.

    Raises ScorebenchError with the first violation on one line, naming the key path.
    """
    import jsonschema

    schema = load_schema()
    base = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, sub):
        if isinstance(instance, dict):
            for prop, sub_schema in properties.items():
                if "default" in sub_schema:
                    instance.setdefault(prop, copy.deepcopy(sub_schema["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, sub)

    if not isinstance(config, dict):
        raise ScorebenchError(f"config: the top level must be a mapping of keys, got {type(config).__name__}")
    checker = base(schema)  # first a check that fills nothing, so an error names what the user wrote
    errors = list(checker.iter_errors(config))
    if errors:
        raise ScorebenchError(error_line(min(errors, key=_error_order)))
    filler = jsonschema.validators.extend(base, {"properties": set_defaults})(schema)
    errors = list(filler.iter_errors(config))
    if errors:  # a default that breaks the schema: a bug in the schema, still reported in one line
        raise ScorebenchError(error_line(min(errors, key=_error_order)))
    return config


def _error_order(err) -> tuple:
    """Sort key: by key path, and within one path an unknown key before a missing required one."""
    rank = {"additionalProperties": 0, "required": 2}.get(err.validator, 1)
    return ([str(p) for p in err.absolute_path], rank)


def error_line(err) -> str:
    """One line for a schema violation: `config <key path>: <what is wrong>; <what is allowed>`."""
    path = [str(p) for p in err.absolute_path]
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        where = "/".join([*path, unknown[0]]) if unknown else "/".join(path)
        return f"config {where}: unknown key; allowed keys here: {', '.join(allowed)}"
    where = "/".join(path) or "(top level)"
    if err.validator == "required":
        return f"config {where}: {err.message}"
    if err.validator == "uniqueItems":
        return f"config {where}: {err.instance!r} repeats a value; each must appear once"
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if err.validator in bounds:
        return f"config {where}: must be {bounds[err.validator]} {err.validator_value}, got {err.instance!r}"
    if err.validator in ("oneOf", "anyOf"):
        options = " or ".join(_describe(s) for s in err.validator_value)
        return f"config {where}: {err.instance!r} is not allowed; use {options}"
    return f"config {where}: {err.message}"


def _describe(sub: dict) -> str:
    """A short phrase for one alternative of a oneOf (e.g. `a number > 0`, `'auto'`)."""
    if "const" in sub:
        return repr(sub["const"])
    text = f"a {sub.get('type', 'value')}"
    for key, op in (("exclusiveMinimum", ">"), ("minimum", ">="), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in sub:
            text += f" {op} {sub[key]}"
    return text
