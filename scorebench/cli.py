"""`scorebench <verb>`: one verb per workflow rule, plus `check` for a study config.

Every verb takes a `--spec` (the JSON a rule gets from study.py, or @file) and output paths.
Imports are lazy so a toy job loads only torch and the few modules it uses. A `ScorebenchError`
becomes one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import time


def _spec(args):
    from scorebench.specs import parse_spec

    return parse_spec(args.spec)


def cmd_train(args):
    from scorebench.jobs.train import train_job

    train_job(_spec(args), args.out_dir)


def cmd_train_pack(args):
    from scorebench.jobs.train import train_pack_job

    train_pack_job(_spec(args), args.out_dir, args.resume_dir)


def cmd_sample(args):
    from scorebench.jobs.sample import sample_job

    sample_job(_spec(args), args.model, args.out)


def cmd_evaluate(args):
    from scorebench.jobs.evaluate import evaluate_samples_job

    evaluate_samples_job(_spec(args), args.samples, args.out, args.reference)


def cmd_score_error(args):
    from scorebench.jobs.evaluate import score_error_job

    score_error_job(_spec(args), args.model, args.out)


def cmd_evaluate_pack(args):
    from scorebench.jobs.group import evaluate_pack_job

    evaluate_pack_job(_spec(args), args.models, args.out_dir, args.work_dir, args.reference)


def cmd_reference_stats(args):
    from scorebench.jobs.evaluate import reference_job

    reference_job(_spec(args), args.out_dir)


def cmd_aggregate(args):
    from scorebench.jobs.report import aggregate_job

    aggregate_job(args.inputs, args.out, train_logs=args.train_logs)


def cmd_figures(args):
    from scorebench.jobs.report import figures_job

    figures_job(args.table, args.out_dir, tables_dir=args.tables, curves=args.curves, samples=args.samples, real=args.real,
                only=args.only)  # fmt: skip


def cmd_score_field(args):
    from scorebench.jobs.evaluate import score_field_job

    score_field_job(_spec(args), args.model, args.out)


def cmd_study_figures(args):
    from scorebench.jobs.report import study_figures_job

    study_figures_job(
        _spec(args), args.table, args.out_dir, fields=args.fields, samples=args.samples, summary=args.summary
    )


def cmd_import_checkpoint(args):
    import json

    from scorebench.models.import_authors import geometric_sigmas, import_checkpoint

    sigmas = None
    if args.levels is not None:
        sigmas = geometric_sigmas(args.sigma_begin, args.sigma_end, args.levels)
    shape = tuple(int(v) for v in args.shape.split(","))
    summary = import_checkpoint(args.checkpoint, args.out, arch=args.arch, preset=args.preset, shape=shape, sigmas=sigmas)
    print(json.dumps(summary))


def cmd_check(args):
    from scorebench.study import Study, load_config

    study = Study(load_config(args.config))
    print(f"study {study.name}: {len(study.cells)} cells, samplers {study.samplers}")
    for cell in study.cells:
        print(" ", cell.id)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scorebench", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", required=True)

    def verb(name, func, help_):
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(func=func)
        return sp

    sp = verb("train", cmd_train, "train one cell's score network (resumes from a checkpoint)")
    sp.add_argument("--spec", required=True, help="cell spec JSON (or @file)")
    sp.add_argument("--out-dir", required=True, help="folder for model.pt, checkpoint.pt, train_log.jsonl")

    sp = verb("train-pack", cmd_train_pack, "train the cells of a pack (training.pack) in one process")
    sp.add_argument("--spec", required=True, help="pack spec JSON (or @file)")
    sp.add_argument("--out-dir", required=True, help="folder for each member's model.pt and train_log.jsonl")
    sp.add_argument("--resume-dir", required=True, help="folder for the pack's resume checkpoint (not an output)")

    sp = verb("sample", cmd_sample, "draw samples from a trained cell with one sampler")
    sp.add_argument("--spec", required=True)
    sp.add_argument("--model", required=True, help="model.pt written by `train`")
    sp.add_argument("--out", required=True, help="samples .npz")

    sp = verb("evaluate", cmd_evaluate, "sample-quality metrics of one samples file")
    sp.add_argument("--spec", required=True)
    sp.add_argument("--samples", required=True)
    sp.add_argument("--reference", default=None, help="reference-stats folder (image datasets)")
    sp.add_argument("--out", required=True, help="tidy metrics .parquet")

    sp = verb("score-error", cmd_score_error, "score error per σ level and density bin")
    sp.add_argument("--spec", required=True)
    sp.add_argument("--model", required=True)
    sp.add_argument("--out", required=True)

    sp = verb("evaluate-pack", cmd_evaluate_pack, "sample, evaluate and score-error a group of toy cells in one process")
    sp.add_argument("--spec", required=True, help="evaluation group spec JSON (or @file)")
    sp.add_argument("--models", required=True, nargs="+", help="each member's model.pt (its cell's or its pack's), any order")
    sp.add_argument("--out-dir", required=True, help="folder for each member's samples/ and metrics/")
    sp.add_argument("--work-dir", required=True, help="folder the files are made in (not an output; kept on failure)")
    sp.add_argument("--reference", default=None, help="reference-stats folder (image datasets)")

    sp = verb("reference-stats", cmd_reference_stats, "reference features of a dataset for FID/KID/PR")
    sp.add_argument("--spec", required=True)
    sp.add_argument("--out-dir", required=True)

    sp = verb("aggregate", cmd_aggregate, "merge per-job tables into the study table and training curves")
    sp.add_argument("--inputs", nargs="+", required=True, help="per-job .parquet files")
    sp.add_argument("--train-logs", nargs="*", default=[], help="train_log.jsonl files (training curves)")
    sp.add_argument("--out", required=True, help="study metrics.parquet (a .csv is written beside it)")

    sp = verb("figures", cmd_figures, "every study's figures and summary tables, from the study table")
    sp.add_argument("--table", required=True)
    sp.add_argument("--curves", default=None, help="training-curves parquet")
    sp.add_argument("--samples", nargs="*", default=[], help="samples .npz files for sample grids")
    sp.add_argument("--real", nargs="*", default=[], help="reference/DATASET/real.npz: held-out images beside the samples")
    sp.add_argument("--out-dir", required=True)
    sp.add_argument("--tables", required=True, help="folder for the Markdown/LaTeX summary tables")
    sp.add_argument("--only", nargs="*", default=None,
                    help="figure names to draw (the workflow's declared outputs); a named figure with nothing to "
                         "draw is an error. Default: every figure the table can fill")  # fmt: skip

    sp = verb("score-field", cmd_score_field, "a 2-D toy cell's score and the exact score on a grid (.npz)")
    sp.add_argument("--spec", required=True)
    sp.add_argument("--model", required=True, help="model.pt written by `train`")
    sp.add_argument("--out", required=True, help="score-field .npz")

    sp = verb("study-figures", cmd_study_figures, "paper figures (config `figures:`) and the study's summary.md")
    sp.add_argument("--spec", required=True, help="study-figures spec JSON (or @file)")
    sp.add_argument("--table", required=True, help="study metrics.parquet")
    sp.add_argument("--fields", nargs="*", default=[], help="score-field .npz files")
    sp.add_argument("--samples", nargs="*", default=[], help="samples .npz files")
    sp.add_argument("--out-dir", required=True, help="figures folder")
    sp.add_argument("--summary", required=True, help="summary Markdown file")

    sp = verb("import-checkpoint", cmd_import_checkpoint,
              "the authors' released NCSN/NCSNv2 weights as a model.pt that sample and score-error load")  # fmt: skip
    sp.add_argument("--checkpoint", required=True, help="the authors' checkpoint_<step>.pth")
    sp.add_argument("--out", required=True, help="model.pt to write")
    sp.add_argument("--arch", required=True, choices=["ncsn", "ncsnv2"])
    sp.add_argument("--preset", required=True, help="ncsn: mnist/cifar10/celeba; ncsnv2: cifar10/celeba/church/ffhq")
    sp.add_argument("--shape", required=True, help="C,H,W of the data, e.g. 3,32,32")
    sp.add_argument("--sigma-begin", type=float, default=1.0, help="σ_1 (NCSN's file holds no σ list)")
    sp.add_argument("--sigma-end", type=float, default=0.01, help="σ_L")
    sp.add_argument("--levels", type=int, default=None, help="L; with σ_1 and σ_L the authors' geometric list")

    sp = verb("check", cmd_check, "validate a study config and list its cells")
    sp.add_argument("--config", required=True)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from scorebench.errors import ScorebenchError
    from scorebench.heap import keep_freed_memory

    keep_freed_memory()  # every verb: CPU steps then reuse their buffers instead of page-faulting
    t0 = time.perf_counter()
    try:
        args.func(args)
    except ScorebenchError as exc:
        print(f"scorebench {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"scorebench {args.verb}: error: no space left on device writing {exc.filename or 'a file'}; "
              "free some space and run snakemake again", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print(f"scorebench {args.verb}: interrupted", file=sys.stderr)
        return 130
    logging.getLogger("scorebench").info("%s finished in %.1f s", args.verb, time.perf_counter() - t0)
    return 0


def run() -> None:
    """The `scorebench` command: `main`'s return value as the exit status (a normal interpreter exit,
    so atexit handlers and library clean-up run)."""
    sys.exit(main())

if __name__ == "__main__":
    run()
