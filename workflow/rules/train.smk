rule train:
    output:
        model=CELL + "/model.pt",
        log=CELL + "/train_log.jsonl",
    log:
        LOGS + "/train/{dataset}/{schedule}/{objective}/seed{seed}.log",
    benchmark:
        R + "/benchmarks/train/{dataset}/{schedule}/{objective}/seed{seed}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=get_train_spec,
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "OMP_NUM_THREADS={threads} scorebench train --spec {params.spec:q} --out-dir {params.out_dir} > {log} 2>&1"
