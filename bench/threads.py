"""Wall time of one packed training job with 1 and 2 threads, on an idle machine and beside busy processes.

The job is the real command line (`scorebench train-pack`, one process, OMP_NUM_THREADS=n) on a pack
of a study (default: the default study's largest pack, device CPU). "busy" starts one spinning
process per CPU first, as other jobs or users of a shared node would; PyTorch's OpenMP threads
then wait for each other at every parallel region whenever one of them is descheduled. The
workflow's `threads:` for train_pack come from these numbers (workflow/rules/train.smk). The load
average before each run is printed too: on a shared machine "idle" may not be idle. Prints ONE
JSON line.

    python bench/threads.py [--configfile config/config.yaml] [--pack mix/dsm] [--steps N] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from scorebench.specs import spec_json
from scorebench.study import Study, validate_config

ROOT = Path(__file__).resolve().parents[1]
SPIN = "while True: pass"


def pack_study(configfile: Path, steps: int | None) -> Study:
    config = yaml.safe_load(configfile.read_text())
    config.setdefault("training", {})["device"] = "cpu"
    config["training"]["pack"] = True
    if steps:
        config["training"]["steps"] = steps
    return Study(validate_config(config))


def run_pack(spec_file: Path, work: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out, resume = work / "members", work / "resume"
    cmd = ["scorebench", "train-pack", "--spec", f"@{spec_file}", "--out-dir", str(out), "--resume-dir", str(resume)]
    t0 = time.perf_counter()
    with open(work / "job.log", "w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    p.add_argument("--pack", default=None, help="dataset/objective (default: the study's largest pack)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the study's)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="spinning processes in the busy runs")
    args = p.parse_args()

    study = pack_study(args.configfile, args.steps)
    name = args.pack or max(study.packs, key=lambda n: len(study.packs[n]))
    work = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    spec_file = work / "pack.json"
    spec_file.write_text(spec_json(study.pack_spec(name)))
    threads = [int(t) for t in args.threads.split(",")]
    result = {"pack": name, "members": len(study.packs[name]), "steps": study.pack_spec(name)["members"]
              [next(iter(study.pack_spec(name)["members"]))]["training"]["steps"], "cpus": os.cpu_count(),
              "busy_processes": args.busy}  # fmt: skip
    for mode in ("idle", "busy"):
        spinners = []
        if mode == "busy":
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
            time.sleep(1.0)
        try:
            for n in threads:
                load = os.getloadavg()[0]
                wall = run_pack(spec_file, Path(tempfile.mkdtemp(dir=work)), n)
                result[f"{mode}_threads{n}_s"] = round(wall, 2)
                result[f"{mode}_threads{n}_load1"] = round(load, 2)
        finally:
            for s in spinners:
                s.kill()
                s.wait()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
