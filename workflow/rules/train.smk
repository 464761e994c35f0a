rule train:
    output:
        model=cell_path("model.pt"),
        log=cell_path("train_log.jsonl"),
    log:
        job_file("logs", "train", ".log"),
    benchmark:
        job_file("benchmarks", "train", ".tsv")
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    params:
        spec=get_train_spec,
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "OMP_NUM_THREADS={threads} exec scorebench train --spec {params.spec:q} --out-dir {params.out_dir} > {log} 2>&1"
