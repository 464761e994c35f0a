"""Config files: a YAML mistake is one line naming file and line, and a key written twice is refused
(PyYAML would silently keep the last), while YAML merge keys keep their meaning."""

import pytest

from scorebench.config_file import read_config
from scorebench.errors import ScorebenchError
from scorebench.study import load_config

STUDY = """\
study: s
datasets:
  mix: {kind: gmm_2mode}
schedules:
  geom: &geom {kind: geometric, sigma_max: 3.0, sigma_min: 0.1, levels: 3}
  geom5: {<<: *geom, levels: 5}
objectives:
  dsm: {kind: dsm}
"""


def one_line_error(path, match):
    with pytest.raises(ScorebenchError) as e:
        read_config(path)
    assert "\n" not in str(e.value), str(e.value)
    assert match in str(e.value), str(e.value)
    return str(e.value)


def test_a_valid_file_reads_and_merge_keys_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(STUDY)
    c = read_config(p)
    assert c["schedules"]["geom5"] == {"kind": "geometric", "sigma_max": 3.0, "sigma_min": 0.1, "levels": 5}
    assert load_config(p)["schedules"]["geom"]["levels"] == 3


@pytest.mark.parametrize(
    "text, line, key",
    [
        (STUDY + "study: t\n", 9, "study"),  # top level, far apart
        (STUDY.replace("  dsm: {kind: dsm}\n", "  dsm: {kind: dsm}\n  dsm: {kind: sliced}\n"), 9, "dsm"),  # a preset
        (STUDY.replace("{kind: gmm_2mode}", "{kind: gmm_2mode, kind: moons}"), 3, "kind"),  # inside a flow mapping
    ],
)
def test_duplicate_keys_are_refused_with_both_lines(tmp_path, text, line, key):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    msg = one_line_error(p, f"{p}:{line}: duplicate key {key!r}")
    assert "first at line" in msg
    with pytest.raises(ScorebenchError, match="duplicate key"):
        load_config(p)  # `scorebench check` reads with the same loader


@pytest.mark.parametrize(
    "text, where",
    [
        (STUDY.replace("levels: 3}", "levels: 3"), ":6:"),  # unclosed flow mapping: found on the next line
        (STUDY.replace("  mix:", "\tmix:"), ":3:1:"),  # a tab indent
        ("study: [s\n", ":2:"),  # unclosed list at the end of the file
    ],
)
def test_syntax_errors_name_file_line_and_column(tmp_path, text, where):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    one_line_error(p, f"config file {p}{where}")


def test_missing_unreadable_and_non_mapping_files(tmp_path):
    one_line_error(tmp_path / "nope.yaml", "does not exist")
    p = tmp_path / "list.yaml"
    p.write_text("- study: s\n")
    one_line_error(p, "top level must be a mapping")
    p.write_bytes(b"study: \xff\n")
    one_line_error(p, "cannot read it")
    p.write_text("")
    assert read_config(p) == {}
