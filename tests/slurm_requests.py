"""What each SLURM job of a dry run would ask for: CPUs, memory, time limit and GPUs, groups included.

`snakemake --profile slurm -n` prints every rule's resources but not a group job's: Snakemake works
those out at submission (`GroupResources.basic_layered`: summed over the jobs that run at once,
the time limit summed along the group's dependency chain), and a dry run computes them as if run
locally. This runs the dry run in this process and, for each job it would submit, records what the
SLURM executor would put into sbatch: a group's resources with Snakemake's own code, as for a
cluster (`run_local=False`); a single job's `threads` and resources.

    python tests/slurm_requests.py --profile PROFILE [--configfile FILE]   # one line per distinct request
    python tests/slurm_requests.py --json --profile PROFILE ...            # one JSON list of every job

Used by tests/test_slurm.py; prints a table for a person.
"""

from __future__ import annotations

import collections
import contextlib
import io
import sys


def slurm_requests(*snakemake_args: str) -> list[dict]:
    """Run `snakemake -n --forceall --nolock *snakemake_args` here; one dict per job it would submit:
    {"name": rule or "group NAME (rules)", "cpus", "mem_mb", "runtime" (minutes), "gpu", "gpu_model"}."""
    from snakemake.cli import main
    from snakemake.executors import dryrun
    from snakemake.resources import GroupResources

    jobs = []
    run_job = dryrun.Executor.run_job

    def record(self, job):
        if job.is_group():
            # a dry run limits itself to --cores 1; a cluster run given no --cores has no such limit
            constraints = job.global_resources.copy()
            constraints["_cores"] = None
            res = GroupResources.basic_layered(
                toposorted_jobs=job.toposorted, constraints=constraints, run_local=False,
                additive_resources=["runtime"], sortby=["runtime"],
            )  # fmt: skip
            rules = "+".join(sorted({j.rule.name for j in job.jobs}))
            name, cpus = f"group {next(iter(job.jobs)).group} ({rules})", res["_cores"]
        else:
            res, name, cpus = dict(job.resources.items()), job.rule.name, job.threads
        if name != "all":
            jobs.append({"name": name, "cpus": int(cpus), "mem_mb": res.get("mem_mb"), "runtime": res.get("runtime"),
                         "gpu": res.get("gpu", 0), "gpu_model": res.get("gpu_model")})  # fmt: skip
        return run_job(self, job)

    dryrun.Executor.run_job = record
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main(["-n", "--forceall", "--nolock", *snakemake_args])
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise RuntimeError(f"snakemake -n failed:\n{out.getvalue()[-4000:]}") from None
    finally:
        dryrun.Executor.run_job = run_job
    return jobs


def summarise(jobs: list[dict]) -> list[dict]:
    """One row per distinct request: the request and how many jobs make it."""
    counts = collections.Counter(tuple(sorted(j.items())) for j in jobs)
    return [dict(key, jobs=n) for key, n in sorted(counts.items(), key=lambda kv: kv[0])]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--json"]:
        import json

        print(json.dumps(slurm_requests(*sys.argv[2:])))
        sys.exit(0)
    for row in summarise(slurm_requests(*sys.argv[1:])):
        print(f"{row['jobs']:4d} x {row['name']:<45} cpus={row['cpus']} mem_mb={row['mem_mb']} "
              f"runtime={row['runtime']} gpu={row['gpu']} gpu_model={row['gpu_model']!r}")  # fmt: skip
