"""Time `snakemake -n` on a generated study of N cells (default 1,000): the DAG must build in seconds.

    python bench/dag.py [--cells 1000]

Prints one JSON line: cells, jobs, dry-run wall seconds.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def study_config(cells: int) -> dict:
    """A toy grid of 10 datasets × 10 schedules × 5 objectives × seeds, trimmed to `cells` by seeds."""
    kinds = ["gmm_2mode", "gmm_ring8", "gmm_grid25", "swiss_roll", "moons"]
    datasets = {f"d{i}": {"kind": kinds[i % 5], "options": {"seed": i}} for i in range(10)}
    schedules = {
        f"geom_L{n}_{w}": {"kind": "geometric", "sigma_max": 5.0, "sigma_min": 0.05, "levels": n, "weighting": w}
        for n in (2, 5, 10, 20, 50)
        for w in ("sigma2", "uniform")
    }
    objectives = {f"o{i}": {"kind": k} for i, k in enumerate(["dsm", "sliced", "sliced_vr", "exact", "oracle"])}
    seeds = list(range(max(1, cells // (10 * 10 * 5))))
    return {"study": "dag_bench", "datasets": datasets, "schedules": schedules, "objectives": objectives, "seeds": seeds}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = study_config(args.cells)
        n_cells = len(cfg["datasets"]) * len(cfg["schedules"]) * len(cfg["objectives"]) * len(cfg["seeds"])
        (Path(tmp) / "config").mkdir()
        (Path(tmp) / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "--directory", tmp],
            capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        total = re.search(r"^total\s+(\d+)$", out.stdout, re.M)
        print(json.dumps({"cells": n_cells, "jobs": int(total.group(1)) if total else None, "dry_run_s": round(wall, 2)}))


if __name__ == "__main__":
    main()
