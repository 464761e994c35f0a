rule aggregate:
    input:
        tables=get_metric_tables,
        train_logs=get_train_logs,
    output:
        table=study_path("metrics.parquet"),
        csv=study_path("metrics.csv"),
        curves=study_path("train_curves.parquet"),
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
    shell:
        "scorebench aggregate --inputs {params.tables} --train-logs {params.train_logs} --out {output.table} > {log} 2>&1"


# The figures and summary tables every study gets (scorebench/report/: default_figures, summary_tables).
rule figures:
    input:
        table=rules.aggregate.output.table,
        curves=rules.aggregate.output.curves,
        samples=get_sample_files,
        real=get_real_images,
    output:
        figures=[
            report(
                study_path(f"figures/{f.shown}"),
                caption=f"../report/{f.caption}",
                category=f.category,
            )
            for f in FIGURES
        ],
        other_formats=[
            study_path(f"figures/{name}") for f in FIGURES for name in f.other_files
        ],
        summary=report(
            study_path("tables/summary.md"),
            caption="../report/summary_tables.rst",
            category=SUMMARY_CATEGORY,
        ),
        tables=[
            study_path(f"tables/{name}")
            for name in SUMMARY_TABLES
            if name != "summary.md"
        ],
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
        figures=[f.name for f in FIGURES],
        out_dir=lambda wildcards: study_path("figures"),
        tables_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "scorebench figures --table {input.table} --curves {input.curves} --samples {params.samples} --real {input.real} --out-dir {params.out_dir} --tables {params.tables_dir} --only {params.figures} > {log} 2>&1"
