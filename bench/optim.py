"""The trainer's Adam: scorebench's LeanAdam against torch.optim.Adam, per workflow job and per step.

Why: LeanAdam calls private torch kernels (`torch._fused_adam_`, `torch._foreach_*`) so that a job
never builds a `torch.optim` optimiser, whose constructor imports `torch._dynamo`. It is worth
keeping only if a whole job is faster with it than with `torch.optim.Adam(fused=True)`.

(a) job: the real `scorebench train` command on the default study's first toy cell (3000 steps),
    process start to exit, one thread, as a workflow job pays it; a fresh output folder each time.
(b) step: ms per training step as that job's own log reports it (median over its log windows of
    1/`steps_per_s`), and the optimiser step alone over the parameters of a 54-member toy pack
    (`PackedMLP`, what `train-pack` steps), in this process.
Variants alternate inside every repeat; each repeat prints the 1-minute load average to stderr.
Prints ONE JSON line: medians per variant, and the load averages seen.

    python bench/optim.py [--repeats 3] [--steps 3000]
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
from pathlib import Path

VARIANTS = ("lean_fused", "torch_fused", "lean_foreach", "torch_foreach")
DYNAMO = "bench: torch._dynamo imported: "  # the child's last stderr line starts with this


def adam_factory(variant: str):
    """A drop-in for `scorebench.optim.make_adam` that always builds `variant`."""
    import torch

    def make(params, *, lr: float, beta1: float, kind: str):
        params, betas = list(params), (beta1, 0.999)
        if variant.startswith("lean"):
            from scorebench.optim import LeanAdam

            return LeanAdam(params, lr=lr, betas=betas, eps=1e-8, fused=variant == "lean_fused")
        fused = variant == "torch_fused"
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8, fused=fused, foreach=not fused)

    return make


def job(variant: str, argv: list[str]) -> None:
    """The child process: `scorebench <argv>` with the trainer's Adam replaced by `variant`; at exit
    it says on stderr whether torch._dynamo was imported."""
    import atexit

    import scorebench.optim

    scorebench.optim.make_adam = adam_factory(variant)  # before scorebench.train binds it
    atexit.register(lambda: print(f"{DYNAMO}{'torch._dynamo' in sys.modules}", file=sys.stderr))
    from scorebench.cli import run

    sys.argv = ["scorebench", *argv]
    run()


def toy_spec(steps: int) -> dict:
    """The default study's first trained toy cell (the job a study runs most of), on the CPU."""
    from scorebench.study import Study, load_config

    study = Study(load_config(str(Path(__file__).resolve().parents[1] / "config" / "config.yaml")))
    cell = next(c for c in study.cells if c.dataset != "digits" and c.objective != "oracle")
    spec = study.train_spec(cell)
    spec["training"].update(steps=steps, device="cpu", progress=False)
    return spec


def time_job(variant: str, spec_file: Path, out_dir: Path) -> tuple[float, float, bool]:
    """(process start to exit in s, ms per step from the job's own log, whether it imported torch._dynamo)."""
    cmd = [sys.executable, __file__, "--job", variant, "train", "--spec", f"@{spec_file}", "--out-dir", str(out_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rates = [json.loads(line)["steps_per_s"] for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    return wall, 1e3 / statistics.median(r for r in rates if r), f"{DYNAMO}True" in proc.stderr


def pack_opt_step_ms(variant: str, members: int = 54, steps: int = 300) -> float:
    """ms per optimiser step over a 54-member toy pack's stacked parameters (gradients preset)."""
    import torch

    from scorebench.models import build_model
    from scorebench.packed import PackedMLP

    sigmas = torch.logspace(0, -1, 10)
    nets = [build_model("mlp", shape=(2,), sigmas=sigmas, preset="tiny") for _ in range(members)]
    params = list(PackedMLP(nets).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = adam_factory(variant)(params, lr=1e-3, beta1=0.9, kind="")
    for _ in range(10):
        opt.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> int:
    if sys.argv[1:2] == ["--job"]:  # internal: this file as the timed child process
        return job(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3000, help="training steps of the toy job (the default study's)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_optim_"))
    spec_file = work / "spec.json"
    spec_file.write_text(json.dumps(toy_spec(args.steps)))
    job_s, step, pack_step, dynamo, loads = {}, {}, {}, {}, []
    for rep in range(args.repeats):
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[: rep % len(VARIANTS)]  # rotate who goes first
        for v in order:
            wall, ms, dynamo[v] = time_job(v, spec_file, work / f"{v}_{rep}")
            job_s.setdefault(v, []).append(wall)
            step.setdefault(v, []).append(ms)
            pack_step.setdefault(v, []).append(pack_opt_step_ms(v))
        loads.append(round(os.getloadavg()[0], 2))
        print(f"repeat {rep + 1}/{args.repeats}: load average (1 min) {loads[-1]}", file=sys.stderr, flush=True)

    def med(d, digits=3):
        return {v: round(statistics.median(d[v]), digits) for v in VARIANTS}

    result = {
        "bench": "optim", "torch": torch.__version__, "steps": args.steps, "repeats": args.repeats, "threads": 1,
        "job_s": med(job_s, 2), "step_ms": med(step), "pack54_opt_step_ms": med(pack_step),
        "job_dynamo_imported": dynamo, "job_s_all": {v: [round(x, 2) for x in job_s[v]] for v in VARIANTS},
        "load_1min": loads,
    }  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
