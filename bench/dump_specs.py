"""Dump every job spec of study configs, or compare two dumps: a refactor of the config layer must
leave every value a job reads unchanged (a spec may only gain keys).

    PYTHONPATH=OLD python bench/dump_specs.py dump old.json config/config.yaml config/studies/x.yaml
    PYTHONPATH=NEW python bench/dump_specs.py dump new.json config/config.yaml config/studies/x.yaml
    python bench/dump_specs.py compare old.json new.json

A dump maps "config :: job" to its spec, for every job the workflow would run: train, pack, sample,
evaluate, score_error, eval_pack, score_field, reference and study_figures. `compare` prints one
JSON line (jobs compared, values changed, keys removed, keys added with their values) and exits 1
when any value changed or any key went missing.
"""

import argparse
import json
import sys
from collections import Counter


def job_specs(study) -> dict:
    """{job id: spec} for every job of a Study, named like the workflow's outputs."""
    specs = {}
    for cell in study.cells:
        specs[f"train/{cell.id}"] = study.train_spec(cell)
        specs[f"score_error/{cell.id}"] = study.eval_spec(cell)
        for s in study.samplers:
            specs[f"sample/{cell.id}/{s}"] = study.sample_spec(cell, s)
            specs[f"evaluate/{cell.id}/{s}"] = study.eval_spec(cell, s)
    for name in study.packs:
        specs[f"pack/{name}"] = study.pack_spec(name)
    for name in study.eval_groups:
        for i, _ in enumerate(study.eval_shards(name)):
            specs[f"eval_pack/{name}/shard{i}"] = study.eval_pack_spec(name, f"shard{i}")
    for cell in study.field_cells:
        specs[f"score_field/{cell.id}"] = study.score_field_spec(cell)
    for d in study.preset_names("datasets"):
        if not study.is_toy(d):
            specs[f"reference/{d}"] = study.reference_spec(d)
    if study.paper_figures:
        specs["study_figures"] = study.study_figures_spec()
    return specs


def dump(out, configs) -> None:
    from scorebench.study import Study, load_config

    result = {}
    for path in configs:
        for job, spec in job_specs(Study(load_config(path))).items():
            result[f"{path} :: {job}"] = spec
    with open(out, "w") as fh:
        json.dump(result, fh, sort_keys=True)
    print(f"{len(result)} job specs from {len(configs)} configs -> {out}")


def leaves(obj, prefix=""):
    """{"a/b/c": value} for every leaf of a nested dict (lists are leaves)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(leaves(v, f"{prefix}/{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def compare(old_path, new_path) -> int:
    old, new = json.load(open(old_path)), json.load(open(new_path))
    changed, removed, added = [], [], Counter()
    missing_jobs = sorted(set(old) ^ set(new))
    for job in sorted(set(old) & set(new)):
        a, b = leaves(old[job]), leaves(new[job])
        changed += [f"{job} :: {k}: {a[k]!r} -> {b[k]!r}" for k in a if k in b and a[k] != b[k]]
        removed += [f"{job} :: {k}" for k in a if k not in b]
        for k in b:
            if k not in a:  # the key's owner and name (no preset or member names) and the value it got
                added[("/".join(k.split("/")[-2:]), json.dumps(b[k]))] += 1
    report = {
        "jobs_old": len(old), "jobs_new": len(new), "jobs_only_in_one": missing_jobs[:20],
        "values_changed": len(changed), "keys_removed": len(removed),
        "keys_added": {f"{k}={v}": n for (k, v), n in sorted(added.items())},
        "examples": (changed + removed)[:20],
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    return 1 if changed or removed or missing_jobs else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out")
    d.add_argument("configs", nargs="+")
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    args = p.parse_args()
    if args.cmd == "dump":
        dump(args.out, args.configs)
    else:
        sys.exit(compare(args.old, args.new))


if __name__ == "__main__":
    main()
