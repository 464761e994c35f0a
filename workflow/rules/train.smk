rule train:
    input:
        checkpoint=get_imported_checkpoint,
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
        slurm_extra=SLURM_EXTRA,
    params:
        spec=get_train_spec,
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "OMP_NUM_THREADS={threads} exec scorebench train --spec {params.spec:q} --out-dir {params.out_dir} > {log} 2>&1"


# training.pack: the cells of one dataset × objective train together in one process, each into its
# own folder of the pack's output (model.pt, train_log.jsonl); their later jobs read them there.
rule train_pack:
    output:
        members=directory(pack_path(layout.MEMBERS)),
    log:
        f"{R}/logs/train_pack/{{dataset}}/{{objective}}.log",
    benchmark:
        f"{R}/benchmarks/train_pack/{{dataset}}/{{objective}}.tsv"
    conda:
        "../../environment.yml"
    threads: 1  # bench/threads.py: 1 thread 42 s, 2 threads 365 s on a loaded 2-core machine (busy: 84 vs 718 s)
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=240,
        slurm_extra=SLURM_EXTRA,
    params:
        spec=get_pack_spec,
        resume_dir=pack_path("resume"),
    shell:
        "OMP_NUM_THREADS={threads} exec scorebench train-pack --spec {params.spec:q} --out-dir {output.members} --resume-dir {params.resume_dir} > {log} 2>&1"
