rule sample:
    input:
        model=get_model,
    output:
        samples=cell_path("samples/{sampler}.npz"),
    log:
        job_file("logs", "sample", ".log", per_sampler=True),
    benchmark:
        job_file("benchmarks", "sample", ".tsv", per_sampler=True)
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
        spec=get_sample_spec,
    shell:
        "OMP_NUM_THREADS={threads} scorebench sample --spec {params.spec:q} --model {params.model} --out {output.samples} > {log} 2>&1"
