rule sample:
    input:
        model=rules.train.output.model,
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
    params:
        spec=get_sample_spec,
    shell:
        "OMP_NUM_THREADS={threads} scorebench sample --spec {params.spec:q} --model {input.model} --out {output.samples} > {log} 2>&1"
