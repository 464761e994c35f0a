rule reference_stats:
    output:
        info=study_path("reference/{dataset}/reference.json"),
        real=study_path("reference/{dataset}/real.npz"),
    log:
        study_path("logs/reference_stats/{dataset}.log"),
    benchmark:
        study_path("benchmarks/reference_stats/{dataset}.tsv")
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
        slurm_extra=SLURM_EXTRA,
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
        table=cell_path("metrics/{sampler}.parquet"),
    log:
        job_file("logs", "evaluate", ".log", per_sampler=True),
    benchmark:
        job_file("benchmarks", "evaluate", ".tsv", per_sampler=True)
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
        slurm_extra=SLURM_EXTRA,
    params:
        spec=get_evaluate_spec,
        reference=lambda wildcards, input: (
            f"--reference {os.path.dirname(input.reference[0])}"
            if input.reference
            else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} scorebench evaluate --spec {params.spec:q} --samples {input.samples} {params.reference} --out {output.table} > {log} 2>&1"


rule score_error:
    input:
        model=get_model,
    output:
        table=cell_path("metrics/score_error.parquet"),
    log:
        job_file("logs", "score_error", ".log"),
    benchmark:
        job_file("benchmarks", "score_error", ".tsv")
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
        slurm_extra=SLURM_EXTRA,
    params:
        model=model_file,
        spec=get_score_error_spec,
    shell:
        "OMP_NUM_THREADS={threads} scorebench score-error --spec {params.spec:q} --model {params.model} --out {output.table} > {log} 2>&1"


# Toy cells (packed or not) are sampled and evaluated in groups of evaluation.group_size, one job
# per group (Study.eval_shards): each cell's files are made by the per-cell jobs' code from the
# per-cell jobs' specs, in a work folder first, so a failed group keeps its finished cells.
rule evaluate_pack:
    input:
        models=get_eval_pack_models,
        reference=get_reference,
    output:
        evaluated=directory(pack_path(f"{layout.EVALUATED}/{{shard}}")),
    log:
        f"{R}/logs/evaluate_pack/{{dataset}}/{{objective}}/{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_pack/{{dataset}}/{{objective}}/{{shard}}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=240,
        slurm_extra=SLURM_EXTRA,
    params:
        spec=get_eval_pack_spec,
        models=eval_pack_model_files,
        work_dir=pack_path("evaluating/{shard}"),
        reference=lambda wildcards, input: (
            f"--reference {os.path.dirname(input.reference[0])}"
            if input.reference
            else ""
        ),
    shell:
        "OMP_NUM_THREADS={threads} exec scorebench evaluate-pack --spec {params.spec:q} --models {params.models:q} {params.reference} --work-dir {params.work_dir} --out-dir {output.evaluated} > {log} 2>&1"
