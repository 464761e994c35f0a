"""Aggregation reads a training curve only from a whole, single-writer, complete train log.

Real logs and model files from a tiny cell and a tiny pack, then the ways a log goes wrong: a
second job's records interleaved (steps not strictly increasing), a writer killed mid-line, a log
cut at a line boundary or emptied (ends before the model's final step). Each is refused with one
line naming the file and the training to redo; the oracle's empty log at step 0 is fine.
"""

import json
import shutil

import pytest

from scorebench.aggregate import read_train_logs
from scorebench.errors import ScorebenchError
from scorebench.study import Study, validate_config

CONFIG = {
    "study": "logs",
    "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 500, "n_test": 200}}},
    "schedules": {
        "geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3},
        "one": {"kind": "single", "sigma": 0.5},
    },
    "objectives": {"dsm": {"kind": "dsm"}, "oracle": {"kind": "oracle"}},
    "training": {"steps": 20, "batch_size": 32, "checkpoint_every": 10, "log_every": 5, "device": "cpu"},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """results/logs/ with one trained cell, one oracle cell and one pack of two cells."""
    from scorebench.jobs.train import train_job, train_pack_job

    root = tmp_path_factory.mktemp("trained") / "results" / "logs"
    single = Study(validate_config(json.loads(json.dumps(CONFIG))))
    cells = {(c.schedule, c.objective): c for c in single.cells}
    train_job(single.train_spec(cells["geom", "dsm"]), root / "mix/geom/dsm/seed0")
    train_job(single.train_spec(cells["geom", "oracle"]), root / "mix/geom/oracle/seed0")
    packed = Study(validate_config(json.loads(json.dumps({**CONFIG, "training": {**CONFIG["training"], "pack": True}}))))
    (name,) = [n for n in packed.packs if n.endswith("/dsm")]
    train_pack_job(packed.pack_spec(name), root / "packs/mix/dsm/members", root / "packs/mix/dsm/resume")
    return root


def copy_of(trained, tmp_path):
    root = tmp_path / "results" / "logs"
    shutil.copytree(trained, root)
    return root


def test_whole_logs_become_curves(trained):
    logs = [trained / "mix/geom/dsm/seed0/train_log.jsonl", trained / "mix/geom/oracle/seed0/train_log.jsonl",
            trained / "packs/mix/dsm/members/geom/seed0/train_log.jsonl",
            trained / "packs/mix/dsm/members/one/seed0/train_log.jsonl"]  # fmt: skip
    assert len(read_train_logs(logs)) == 3 * 4  # three trained cells; the oracle logs nothing
    for log in logs[:1] + logs[2:]:
        assert read_train_logs([log])["step"].tolist() == [5, 10, 15, 20]


def refused(log, *needles):
    with pytest.raises(ScorebenchError) as info:
        read_train_logs([log])
    message = str(info.value)
    assert "\n" not in message and str(log) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_a_second_writers_records_are_refused(trained, tmp_path):
    root = copy_of(trained, tmp_path)
    log = root / "mix/geom/dsm/seed0/train_log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3] + lines[1:]))  # a duplicate job resumed at step 10 and appended: 5 10 15 10 15 20
    refused(log, "step 10 after step 15", f"delete {log.with_name('model.pt')}", "rule train")


def test_a_pack_members_bad_log_names_the_pack(trained, tmp_path):
    root = copy_of(trained, tmp_path)
    log = root / "packs/mix/dsm/members/one/seed0/train_log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines + lines[-1:]))  # the last record twice
    refused(log, "step 20 after step 20", f"delete {root / 'packs/mix/dsm/members'}", "rule train_pack")


def test_a_log_cut_mid_line_is_refused(trained, tmp_path):
    log = copy_of(trained, tmp_path) / "mix/geom/dsm/seed0/train_log.jsonl"
    text = log.read_text()
    log.write_text(text[: len(text) - 7])
    refused(log, "ends mid-line", "rule train")
    log.write_text(text.replace("\n", "\n{\"step\": 7, \"lo\n", 1))  # a torn line inside
    refused(log, "line 2 is not a log record")


def test_a_log_that_ends_before_the_model_is_refused(trained, tmp_path):
    log = copy_of(trained, tmp_path) / "mix/geom/dsm/seed0/train_log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))  # cut at a line boundary
    refused(log, "ends at step 15 but its model is at step 20")
    log.write_text("")
    refused(log, "is empty but its model is at step 20")
    log.with_name("model.pt").unlink()
    refused(log, "no model file")


def test_the_oracles_empty_log_at_step_zero_is_fine(trained):
    assert read_train_logs([trained / "mix/geom/oracle/seed0/train_log.jsonl"]).empty
