"""A job's spec as text: the canonical JSON Snakemake compares, and its parse from a command line.

A spec is the plain dict of exactly the settings one job depends on (study.py makes them). Its
canonical JSON is a rule's `params:` value, so Snakemake reruns a job exactly when its own
settings change, and its digest stamps files made from it (scorebench.stamps).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from scorebench.errors import ScorebenchError


def spec_json(spec: dict) -> str:
    """Canonical JSON of a spec: the string Snakemake compares to decide on reruns."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def spec_digest(spec: dict) -> str:
    """SHA-256 of the canonical JSON: a short name for "made for exactly these settings"."""
    return hashlib.sha256(spec_json(spec).encode()).hexdigest()


def parse_spec(text: str) -> dict:
    """A spec from its JSON text or from `@path` to a JSON file."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScorebenchError(f"--spec: not valid JSON ({exc})") from None
