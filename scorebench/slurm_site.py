"""Checks of a SLURM site profile, made once when the workflow is parsed, before any job is submitted.

- A placeholder left in the site profile template (profiles/slurm/config.yaml) is refused in one
  line naming the key to set. Left to the executor plugin, every job fails the account check on its
  own, each retried: the template's placeholder account failed 30 times before the run stopped.
- A rule that asks more CPUs than the partition's nodes have is refused in one line naming the rule
  and the fix: SLURM would keep such a job PENDING (reason PartitionConfig) forever, without a hint.

The Snakefile calls `site_errors` with Snakemake's resource settings; only runs with a partition
set (a site profile) are checked, and the CPU check needs `sinfo` (it is skipped without it).
"""

from __future__ import annotations

import shutil
import subprocess

PLACEHOLDER = "EDIT_ME"
SITE_KEYS = ("slurm_account", "slurm_partition")
TEMPLATE = "profiles/slurm/config.yaml"
WHERE_TO_LOOK = {
    "slurm_account": "`sacctmgr show assoc user=$USER format=account` lists yours",
    "slurm_partition": "`sinfo -s` lists the partitions",
}


def raw_value(resource) -> str | None:
    """A resource's value as written in a profile or on the command line (quotes stripped), or None."""
    if resource is None:
        return None
    raw = getattr(resource, "raw", resource)
    if raw is None or callable(raw):
        return None
    return str(raw).strip().strip("'\"")


def placeholder_error(default_resources, overwrite_resources) -> str | None:
    """One line naming the first site key still set to the template's placeholder, or None."""
    places = [("default-resources", default_resources or {})]
    places += [(f"set-resources: {rule}", res) for rule, res in (overwrite_resources or {}).items()]
    for where, resources in places:
        for key in SITE_KEYS:
            if raw_value(resources.get(key)) == PLACEHOLDER:
                return (
                    f"{where}: {key} is still the site profile template's placeholder {PLACEHOLDER}; set it in your "
                    f"copy of {TEMPLATE} ({WHERE_TO_LOOK[key]})"
                )
    return None


def partition_cpus(partition: str, sinfo: str = "sinfo") -> int | None:
    """The most CPUs one node of `partition` has (`sinfo -h -p PARTITION -o %c`), or None if unknown."""
    if shutil.which(sinfo) is None:
        return None
    try:
        out = subprocess.run([sinfo, "-h", "-p", partition, "-o", "%c"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    counts = [int(tok.rstrip("+")) for tok in out.stdout.split() if tok.rstrip("+").isdigit()]
    return max(counts) if out.returncode == 0 and counts else None


def node_fit_error(threads: dict[str, int], partition: str, cpus: int | None) -> str | None:
    """One line naming the rule that asks the most CPUs beyond what a node of `partition` has, or None."""
    if cpus is None:
        return None
    over = {rule: n for rule, n in threads.items() if isinstance(n, int) and n > cpus}
    if not over:
        return None
    rule = max(over, key=over.get)
    return (
        f"rule {rule} asks {over[rule]} CPUs but the nodes of partition {partition} have {cpus} (sinfo), so SLURM "
        f"would keep it pending forever; add `--set-threads {rule}={cpus}` (or `set-threads:` in your site profile) "
        f"or choose a partition with larger nodes"
    )


def site_errors(resource_settings, rule_threads: dict[str, int]) -> str | None:
    """The first problem of a run's site settings (placeholder, then node size), or None."""
    defaults = resource_settings.default_resources
    error = placeholder_error(defaults, resource_settings.overwrite_resources)
    if error:
        return error
    partition = raw_value(defaults.get("slurm_partition")) if defaults is not None else None
    if not partition:
        return None
    return node_fit_error(rule_threads, partition, partition_cpus(partition))
