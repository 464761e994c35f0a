rule reference_stats:
    output:
        info=R + "/reference/{dataset}/reference.json",
    log:
        LOGS + "/reference_stats/{dataset}.log",
    benchmark:
        R + "/benchmarks/reference_stats/{dataset}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=get_reference_spec,
        out_dir=lambda wildcards, output: os.path.dirname(output.info),
    shell:
        "OMP_NUM_THREADS={threads} scorebench reference-stats --spec {params.spec:q} --out-dir {params.out_dir} > {log} 2>&1"


rule evaluate:
    input:
        samples=rules.sample.output.samples,
        reference=get_reference,
    output:
        table=CELL + "/metrics/{sampler}.parquet",
    log:
        LOGS + "/evaluate/{dataset}/{schedule}/{objective}/seed{seed}/{sampler}.log",
    benchmark:
        R + "/benchmarks/evaluate/{dataset}/{schedule}/{objective}/seed{seed}/{sampler}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=get_evaluate_spec,
        reference=lambda wildcards, input: (
            f"--reference {os.path.dirname(input.reference[0])}" if input.reference else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} scorebench evaluate --spec {params.spec:q} --samples {input.samples} {params.reference} --out {output.table} > {log} 2>&1"


rule score_error:
    input:
        model=rules.train.output.model,
    output:
        table=CELL + "/metrics/score_error.parquet",
    log:
        LOGS + "/score_error/{dataset}/{schedule}/{objective}/seed{seed}.log",
    benchmark:
        R + "/benchmarks/score_error/{dataset}/{schedule}/{objective}/seed{seed}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=get_score_error_spec,
    shell:
        "OMP_NUM_THREADS={threads} scorebench score-error --spec {params.spec:q} --model {input.model} --out {output.table} > {log} 2>&1"
