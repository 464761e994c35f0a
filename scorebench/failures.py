"""After a failed run, one line per failed job on the console: the job's own error, from its log.

A job's `scorebench VERB: error: ...` line goes to its log file (each rule sends the job's output
there). Snakemake's error block names that file but prints the job's whole command instead (its
spec JSON twice, 60-90 terminal lines) and not the error. The Snakefile's `onerror` handler passes
Snakemake's own log of the run to `job_errors`, which finds each failed job's log files (the
"log: ... (check log file(s) for error details)" lines of Snakemake's error blocks) and returns,
per failed job, its log and the last error line in it: scorebench's one-liner, else the last line
(a traceback's exception, or SLURM's "CANCELLED" note in the job's SLURM log).
"""

from __future__ import annotations

import re
from pathlib import Path

LOG_LINE = re.compile(r"^\s*log: (.+) \(check log file\(s\) for error details\)\s*$")
SCOREBENCH_ERROR = re.compile(r"^scorebench [\w-]+: (error|interrupted)\b")
SLURM_LOGS = "slurm_logs"  # .snakemake/slurm_logs/: where snakemake-executor-plugin-slurm puts SLURM's job logs


def failed_job_logs(snakemake_logs) -> list[list[str]]:
    """The log files of each failed job named in Snakemake's log(s) of a run (a path or a list of
    paths, as `onerror` gets them), in order. A job tried several times counts once, with the log
    files of its last try (on SLURM each try has its own SLURM log)."""
    if isinstance(snakemake_logs, (str, Path)):
        snakemake_logs = [snakemake_logs]
    jobs: dict[str, list[str]] = {}
    for log in snakemake_logs or []:
        try:
            text = Path(log).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = LOG_LINE.match(line)
            if m:
                files = [f.strip() for f in m.group(1).split(", ") if f.strip()]
                if all(SLURM_LOGS in Path(f).parts for f in files):
                    continue  # a group job's own SLURM log; its jobs' logs are listed one by one
                jobs[files[0]] = files
    return list(jobs.values())


def last_error(files) -> str | None:
    """A job's error line: the last scorebench error line in any of its logs, else the last
    non-empty line of the first readable one."""
    fallback = None
    for f in files:
        try:
            lines = [ln.strip() for ln in Path(f).read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        errors = [ln for ln in lines if SCOREBENCH_ERROR.match(ln)]
        if errors:
            return errors[-1]
        if fallback is None and lines:
            fallback = lines[-1]
    return fallback


def job_errors(snakemake_log) -> list[str]:
    """"LOG: ERROR LINE" for each failed job of the run whose Snakemake log is given."""
    out = []
    for files in failed_job_logs(snakemake_log):
        line = last_error(files)
        out.append(f"{files[0]}: {line if line is not None else '(its log is empty or missing)'}")
    return out
