rule sample:
    input:
        model=rules.train.output.model,
    output:
        samples=CELL + "/samples/{sampler}.npz",
    log:
        LOGS + "/sample/{dataset}/{schedule}/{objective}/seed{seed}/{sampler}.log",
    benchmark:
        R + "/benchmarks/sample/{dataset}/{schedule}/{objective}/seed{seed}/{sampler}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=get_sample_spec,
    shell:
        "OMP_NUM_THREADS={threads} scorebench sample --spec {params.spec:q} --model {input.model} --out {output.samples} > {log} 2>&1"
