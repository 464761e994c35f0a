"""Reading a study config file: YAML whose mistakes are named by file and line, duplicates refused.

PyYAML keeps the last of two equal keys in one mapping without a word, so a preset written twice
(or a key pasted twice) silently loses a setting; here it is an error naming both lines. A syntax
error names the file, line and column instead of a parser's multi-line report. YAML merge keys
(`<<: *anchor`) keep their meaning: keys written beside a merge override it and are not duplicates.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from scorebench.errors import ScorebenchError

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MERGE_TAG = "tag:yaml.org,2002:merge"


class _DuplicateKey(Exception):
    def __init__(self, key, line: int, first: int):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class StrictLoader(_BaseLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key] + 1)
                    seen[key] = key_node.start_mark.line
                except TypeError:  # an unhashable key: the base loader reports it
                    continue
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor("tag:yaml.org,2002:map", StrictLoader.construct_yaml_map)


def read_config(path) -> dict:
    """The mapping in a YAML (or JSON) config file; any problem is one ScorebenchError line naming
    the file (and line): missing, unreadable, a syntax error, a duplicate key, not a mapping."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScorebenchError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScorebenchError(f"config file {p}: cannot read it ({exc})") from None
    try:
        config = yaml.load(text, Loader=StrictLoader)
    except _DuplicateKey as dup:
        raise ScorebenchError(
            f"config file {p}:{dup.line}: duplicate key {dup.key!r} (first at line {dup.first}); "
            "YAML would keep only the last, so write each key once"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        what = exc.problem or exc.context or "unreadable YAML"
        if exc.problem and exc.context:  # e.g. "did not find expected ',' or '}' (while parsing a flow mapping at line 15)"
            at = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            what = f"{exc.problem} ({exc.context}{at})"
        raise ScorebenchError(f"config file {where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ScorebenchError(f"config file {p}: YAML error: {' '.join(str(exc).split())}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ScorebenchError(f"config file {p}: the top level must be a mapping of keys (study:, datasets:, ...)")
    return config


def exit_on_error(path) -> None:
    """Read a config file and exit with its one-line error, if any (the Snakefile's check of the
    default config, which Snakemake would otherwise report without a file or line)."""
    import sys

    try:
        read_config(path)
    except ScorebenchError as exc:
        sys.exit(f"scorebench: error: {exc}")
