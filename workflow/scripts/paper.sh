#!/usr/bin/env bash
# Run the paper studies one after another (one configfile per Snakemake run), then build each
# study's HTML report. CPU defaults take a few minutes each on 2 cores; pass `cluster` to run the
# *_cluster variants instead (with your profile, e.g. `workflow/scripts/paper.sh cluster --profile slurm`).
#   workflow/scripts/paper.sh [cluster] [extra snakemake arguments...]
set -euo pipefail
cd "$(dirname "$0")/../.."
suffix=""
if [[ "${1:-}" == "cluster" ]]; then
    suffix="_cluster"
    shift
fi
for study in score_fields langevin_vs_annealed samplers lambda_levels objectives; do
    config="config/studies/${study}${suffix}.yaml"
    snakemake --cores all --configfile "$config" "$@"
    snakemake --configfile "$config" --report "results/${study}${suffix}/report.html" "$@"
done
