rule aggregate:
    input:
        tables=get_metric_tables,
        train_logs=get_train_logs,
    output:
        table=R + "/metrics.parquet",
        csv=R + "/metrics.csv",
        curves=R + "/train_curves.parquet",
        summary=R + "/tables/summary.md",
        latex=R + "/tables/summary.tex",
    log:
        LOGS + "/aggregate.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        tables_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "scorebench aggregate --inputs {input.tables} --train-logs {input.train_logs} --out {output.table} --tables {params.tables_dir} > {log} 2>&1"


rule figures:
    input:
        table=rules.aggregate.output.table,
        curves=rules.aggregate.output.curves,
        samples=get_sample_files,
    output:
        report(
            expand(R + "/figures/{name}.png", name=FIGURES),
            caption="../report/figures.rst",
            category="Figures",
        ),
        expand(R + "/figures/{name}.pdf", name=FIGURES),
    log:
        LOGS + "/figures.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        out_dir=R + "/figures",
    shell:
        "scorebench figures --table {input.table} --curves {input.curves} --samples {input.samples} --out-dir {params.out_dir} > {log} 2>&1"
