"""Wall time of a λ × L × seed ablation's training on one toy: one packed job vs one job per cell.

Both sides run the real command line (`scorebench train` per cell, `scorebench train-pack` once) as
separate processes with the same cores: `--cores` single-threaded cell jobs at a time, or one pack
job with `--cores` threads. With `--workflow` both sides are Snakemake runs of the study's training
jobs instead (`snakemake --cores N --until train|train_pack`), so each side also pays what a
workflow job costs (job scheduling, a shell, output checks). With `--workflow --whole` both sides
run the whole ablation study (training, sampling, evaluation, tables, figures): packed training
and grouped evaluation (`evaluation.group_size`, default 8) against one job per cell and rule
(`group_size` 1). Prints ONE JSON line.

    python bench/packing.py [--dataset gmm_ring8] [--steps 2000] [--seeds 3] [--cores 2] [--workflow [--whole]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scorebench.specs import spec_json
from scorebench.study import Study, validate_config

WEIGHTINGS = {"sigma2": "σ²", "sigma": "σ", "uniform": "1"}
LEVELS = (1, 2, 5, 10, 20, 50)


def ablation_config(dataset: str, steps: int, seeds: int, pack: bool, group_size: int | None = None) -> dict:
    """The lambda_levels grid on one toy: 3 λ × 6 L × seeds cells, DSM (group_size: the schema's default if None)."""
    schedules = {}
    for weighting in WEIGHTINGS:
        for levels in LEVELS:
            schedules[f"{weighting}_L{levels}"] = (
                {"kind": "single", "sigma": 0.1, "weighting": weighting}
                if levels == 1
                else {"kind": "geometric", "sigma_max": 5.0, "sigma_min": 0.1, "levels": levels, "weighting": weighting}
            )
    config = {
        "study": "bench_packing",
        "seeds": list(range(seeds)),
        "datasets": {"toy": {"kind": dataset}},
        "schedules": schedules,
        "objectives": {"dsm": {"kind": "dsm"}},
        "training": {"steps": steps, "batch_size": 128, "log_every": max(1, steps // 10), "checkpoint_every": steps,
                     "device": "cpu", "pack": pack},
        "sampling": {"samplers": {"annealed": {"kind": "annealed_langevin", "n_steps": 10}}},
    }  # fmt: skip
    if group_size is not None:
        config["evaluation"] = {"group_size": group_size}
    return validate_config(config)


def run(cmd: list[str], threads: int, log: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="gmm_ring8")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip-separate", action="store_true", help="time the packed job only")
    p.add_argument("--workflow", action="store_true", help="time Snakemake runs of the training jobs")
    p.add_argument("--whole", action="store_true", help="with --workflow: the whole study, evaluation grouped or not")
    args = p.parse_args()
    if args.whole and not args.workflow:
        p.error("--whole needs --workflow")
    work = Path(tempfile.mkdtemp(prefix="bench_packing_"))
    if args.workflow:
        return workflow_bench(args, work)

    separate = Study(ablation_config(args.dataset, args.steps, args.seeds, pack=False))
    packed = Study(ablation_config(args.dataset, args.steps, args.seeds, pack=True))
    (name,) = packed.packs
    pack_spec = work / "pack.json"
    pack_spec.write_text(spec_json(packed.pack_spec(name)))
    cmd = ["scorebench", "train-pack", "--spec", f"@{pack_spec}", "--out-dir", str(work / "packed"),
           "--resume-dir", str(work / "resume")]  # fmt: skip
    packed_s = run(cmd, args.cores, work / "packed.log")

    result = {"dataset": args.dataset, "cells": len(separate.cells), "steps": args.steps, "cores": args.cores,
              "packed_wall_s": round(packed_s, 2)}  # fmt: skip
    if not args.skip_separate:
        jobs = []
        for i, cell in enumerate(separate.cells):
            spec = work / f"cell{i}.json"
            spec.write_text(spec_json(separate.train_spec(cell)))
            jobs.append((["scorebench", "train", "--spec", f"@{spec}", "--out-dir", str(work / f"cell{i}")], work / f"cell{i}.log"))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.cores) as pool:
            per_job = list(pool.map(lambda job: run(job[0], 1, job[1]), jobs))
        separate_s = time.perf_counter() - t0
        result.update(
            separate_wall_s=round(separate_s, 2),
            separate_job_median_s=round(statistics.median(per_job), 2),
            speedup=round(separate_s / packed_s, 2),
        )
    print(json.dumps(result), flush=True)


def workflow_bench(args, work: Path) -> None:
    import yaml

    root = Path(__file__).resolve().parents[1]
    mode = "workflow_whole" if args.whole else "workflow"
    result = {"dataset": args.dataset, "steps": args.steps, "cores": args.cores, "mode": mode}
    for pack, target in ((True, "train_pack"), (False, "train")):
        config = ablation_config(args.dataset, args.steps, args.seeds, pack=pack, group_size=None if pack else 1)
        config["results_dir"] = str(work / target)
        path = work / f"{target}.yaml"
        path.write_text(yaml.safe_dump(config))
        until = [] if args.whole else ["--until", target]
        cmd = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "--directory", str(root), "--configfile",
               str(path), "--cores", str(args.cores), *until, "--quiet"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        side = "packed" if pack else "separate"
        result[f"{side}_wall_s"] = round(time.perf_counter() - t0, 2)
        # jobs with a benchmark file: every job but aggregate, figures and the target rule `all`
        result[f"{side}_jobs"] = len(list((work / target / config["study"] / "benchmarks").rglob("*.tsv")))
        result["cells"] = len(Study(config).cells)
    result["speedup"] = round(result["separate_wall_s"] / result["packed_wall_s"], 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
