"""Wall time of a whole study run and the start-up time of its jobs.

Runs `snakemake --cores N` on a study config (the default study unless --configfile) in a fresh
results folder, then reads every job log's `ready: ... after X s since process start` line (written
by scorebench.clock.log_ready when a job starts its real work: the interpreter, imports, data and
model are behind it) and each job's Snakemake benchmark file. Prints ONE JSON line:
wall_s, jobs, the load average before and after, and per rule the job count, median/max start-up and median job wall time.

    python bench/study.py [--configfile config/config.yaml] [--cores 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"ready: .* after ([0-9.]+) s since process start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configfile", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--cores", default=str(os.cpu_count() or 1))
    args = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench_study_"))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(ROOT),
           "--configfile", args.configfile, "--config", f"results_dir={out}", "--cores", args.cores, "--quiet"]  # fmt: skip
    load_before = [round(v, 2) for v in os.getloadavg()]  # a busy machine stretches wall_s: say how busy
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load_after = [round(v, 2) for v in os.getloadavg()]
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        return proc.returncode

    startup, job_s = defaultdict(list), defaultdict(list)
    for logfile in out.rglob("*.log"):
        parts = logfile.relative_to(out).parts  # STUDY/logs/RULE/... or STUDY/logs/RULE.log
        if len(parts) < 3 or parts[1] != "logs":
            continue
        rule = Path(parts[2]).stem
        found = READY.findall(logfile.read_text(errors="replace"))
        if found:
            startup[rule].append(float(found[0]))
    for tsv in out.rglob("*.tsv"):
        parts = tsv.relative_to(out).parts
        if len(parts) < 3 or parts[1] != "benchmarks":
            continue
        rule = parts[2]
        with open(tsv) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                job_s[rule].append(float(row["s"]))
    rules = {}
    for rule in sorted(set(startup) | set(job_s)):
        s, j = startup.get(rule, []), job_s.get(rule, [])
        rules[rule] = {
            "jobs": len(j) or len(s),
            "startup_median_s": round(statistics.median(s), 2) if s else None,
            "startup_max_s": round(max(s), 2) if s else None,
            "job_median_s": round(statistics.median(j), 2) if j else None,
        }
    result = {"config": os.path.relpath(args.configfile, ROOT), "cores": int(args.cores), "wall_s": round(wall, 1),
              "jobs": sum(r["jobs"] for r in rules.values()), "load_avg_1_5_15_before": load_before,
              "load_avg_1_5_15_after": load_after, "rules": rules}  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
