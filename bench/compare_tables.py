"""Do two runs of the same studies give the same numbers? Compare their metrics.parquet files.

A refactor that must not change behaviour is checked by running every study before and after it
and comparing the tables here: rows are matched on the key columns (results.KEY_COLUMNS), the
`value` of every metric is compared, and so is every other column the two tables share, except
the ones that may differ between two runs of the same code (wall times, rates, GPU hours, host,
git commit, timestamps, device details). Prints ONE JSON line per study:

    python bench/compare_tables.py BEFORE_DIR AFTER_DIR [study ...]

{"study", "rows_before", "rows_after", "matched", "value_max_abs_diff", "values_differing",
 "columns_only_before", "columns_only_after", "other_columns_differing"}; exit code 1 if any study
differs in its values or rows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scorebench.results import KEY_COLUMNS  # noqa: E402

RUN_COLUMNS = re.compile(r"wall|_per_s|gpu_hours|host|git_commit|^time|^device_|^version_|^python$|train_device")


def compare(before: Path, after: Path) -> dict:
    a, b = pd.read_parquet(before), pd.read_parquet(after)
    keys = [c for c in KEY_COLUMNS if c in a.columns and c in b.columns]
    # timing metrics (e.g. sample_wall_s rows) differ between any two runs
    timing = a["metric"].astype(str).str.contains("wall")
    a, b = a[~timing], b[~b["metric"].astype(str).str.contains("wall")]
    m = a.merge(b, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    both = m[m["_merge"] == "both"]
    va, vb = both["value_a"].to_numpy(float), both["value_b"].to_numpy(float)
    same = (va == vb) | (np.isnan(va) & np.isnan(vb))
    shared = [c for c in a.columns if c in b.columns and c not in keys and c != "value" and not RUN_COLUMNS.search(c)]
    other = []
    for c in shared:
        x, y = both[f"{c}_a"], both[f"{c}_b"]
        differ = ~((x == y) | (x.isna() & y.isna()))
        if differ.any():
            other.append(c)
    diff = np.abs(va - vb)
    return {
        "rows_before": len(a), "rows_after": len(b), "matched": int(len(both)),
        "value_max_abs_diff": float(np.nanmax(diff)) if len(diff) else 0.0,
        "values_differing": int((~same).sum()),
        "columns_only_before": sorted(set(a.columns) - set(b.columns)),
        "columns_only_after": sorted(set(b.columns) - set(a.columns)),
        "other_columns_differing": other,
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path, help="results folder of the first run (holds STUDY/metrics.parquet)")
    p.add_argument("after", type=Path, help="results folder of the second run")
    p.add_argument("studies", nargs="*", help="study names (default: every study in BEFORE)")
    args = p.parse_args()
    studies = args.studies or sorted(d.parent.name for d in args.before.glob("*/metrics.parquet"))
    failed = False
    for study in studies:
        out = {"study": study, **compare(args.before / study / "metrics.parquet", args.after / study / "metrics.parquet")}
        failed |= out["values_differing"] > 0 or out["matched"] != out["rows_before"] or out["rows_before"] != out["rows_after"]
        print(json.dumps(out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
