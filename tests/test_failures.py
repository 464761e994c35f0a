"""The end-of-run error lines (scorebench.failures) from Snakemake logs as a SLURM run writes them,
and the site checks (scorebench.slurm_site) on their own. The local runs behind both are in
tests/test_recovery.py and tests/test_slurm.py."""

from scorebench.failures import job_errors
from scorebench.slurm_site import node_fit_error, placeholder_error


def test_one_line_per_failed_job_with_its_scorebench_error(tmp_path):
    logs = tmp_path / "results" / "s" / "logs"
    (logs / "train").mkdir(parents=True)
    (logs / "train" / "a.log").write_text("INFO ready\ntrain: 10%\nscorebench train: error: training diverged: loss nan\n")
    slurm = tmp_path / ".snakemake" / "slurm_logs"
    slurm.mkdir(parents=True)
    for job in (11, 12):  # two tries of the same group job
        (slurm / f"{job}.log").write_text(f"slurmstepd: error: *** JOB {job} ON n1 CANCELLED AT 2026 ***\n")
    (logs / "sample.log").write_text("Traceback (most recent call last):\n  ...\nValueError: a bug\n")
    block = "Error in group cell:\n    log: {slurm} (check log file(s) for error details)\n    jobs:\n" \
            "        rule train:\n            log: {train} (check log file(s) for error details)\n"  # fmt: skip
    snakemake_log = tmp_path / "run.log"
    snakemake_log.write_text(
        block.format(slurm=slurm / "11.log", train=logs / "train" / "a.log")
        + block.format(slurm=slurm / "12.log", train=logs / "train" / "a.log")
        + f"Error in rule sample:\n    log: {logs / 'sample.log'}, {slurm / '12.log'} (check log file(s) for error details)\n"
        + f"Error in rule evaluate:\n    log: {logs / 'none.log'} (check log file(s) for error details)\n"
    )
    assert job_errors([str(snakemake_log)]) == [  # the group's train job once, though tried twice
        f"{logs / 'train' / 'a.log'}: scorebench train: error: training diverged: loss nan",
        f"{logs / 'sample.log'}: ValueError: a bug",
        f"{logs / 'none.log'}: (its log is empty or missing)",
    ]
    (logs / "sample.log").write_text("")  # nothing in the job's own log: its SLURM log has the last word
    assert job_errors(snakemake_log)[1] == f"{logs / 'sample.log'}: slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2026 ***"
    assert job_errors(tmp_path / "missing.log") == []


class Raw:
    """A resource as Snakemake keeps a profile's value: `.raw` is the text as written."""

    def __init__(self, raw):
        self.raw = raw


def test_placeholders_are_named_by_their_key():
    assert placeholder_error({"slurm_account": Raw("'acct'"), "slurm_partition": Raw("gpu")}, {}) is None
    msg = placeholder_error({"slurm_account": Raw("acct"), "slurm_partition": Raw("EDIT_ME")}, {})
    assert msg.startswith("default-resources: slurm_partition is still the site profile template's placeholder")
    msg = placeholder_error({}, {"train": {"slurm_account": Raw("'EDIT_ME'")}})
    assert msg.startswith("set-resources: train: slurm_account is still")


def test_the_rule_asking_the_most_cpus_beyond_the_node_is_named():
    assert node_fit_error({"train": 2, "sample": 1}, "gpu", 2) is None
    assert node_fit_error({"train": 8}, "gpu", None) is None  # no sinfo: nothing known, nothing refused
    msg = node_fit_error({"train": 3, "train_pack": 4, "sample": 1}, "gpu", 2)
    assert msg.startswith("rule train_pack asks 4 CPUs but the nodes of partition gpu have 2 (sinfo)")
    assert "--set-threads train_pack=2" in msg
