rule aggregate:
    input:
        tables=get_metric_tables,
        train_logs=get_train_logs,
    output:
        table=study_path("metrics.parquet"),
        csv=study_path("metrics.csv"),
        curves=study_path("train_curves.parquet"),
        summary=study_path("tables/summary.md"),
        latex=study_path("tables/summary.tex"),
    log:
        study_path("logs/aggregate.log"),
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        slurm_extra=SLURM_EXTRA,
    params:
        tables=metric_table_files,
        train_logs=train_log_files,
        tables_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "scorebench aggregate --inputs {params.tables} --train-logs {params.train_logs} --out {output.table} --tables {params.tables_dir} > {log} 2>&1"


rule figures:
    input:
        table=rules.aggregate.output.table,
        curves=rules.aggregate.output.curves,
        samples=get_sample_files,
    output:
        score_error_vs_sigma=report(
            study_path("figures/score_error_vs_sigma.png"),
            caption="../report/score_error_vs_sigma.rst",
            category="Score error",
        ),
        score_error_by_density=report(
            study_path("figures/score_error_by_density.png"),
            caption="../report/score_error_by_density.rst",
            category="Score error",
        ),
        sample_quality=report(
            study_path("figures/sample_quality.png"),
            caption="../report/sample_quality.rst",
            category="Sample quality",
        ),
        metric_vs_levels=report(
            study_path("figures/metric_vs_levels.png"),
            caption="../report/metric_vs_levels.rst",
            category="Ablations",
        ),
        training_curves=report(
            study_path("figures/training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training",
        ),
        samples=report(
            study_path("figures/samples.png"),
            caption="../report/samples.rst",
            category="Sample quality",
        ),
        pdfs=[study_path(f"figures/{name}.pdf") for name in FIGURES],
    log:
        study_path("logs/figures.log"),
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        slurm_extra=SLURM_EXTRA,
    params:
        samples=sample_files,
        out_dir=lambda wildcards, output: os.path.dirname(output.samples),
    shell:
        "scorebench figures --table {input.table} --curves {input.curves} --samples {params.samples} --out-dir {params.out_dir} > {log} 2>&1"
