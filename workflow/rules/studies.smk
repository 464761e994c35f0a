# Paper studies (config `figures:`, scorebench/report/): score fields on a grid per 2-D toy cell, then
# the paper figures and summary.md of the study. Requested by get_final_output() only when the config
# asks for them; each paper study's registry entry names its figures and what it reads.


rule score_field:
    input:
        model=get_model,
    output:
        field=cell_path("score_field.npz"),
    log:
        job_file("logs", "score_field", ".log"),
    benchmark:
        job_file("benchmarks", "score_field", ".tsv")
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=30,
        slurm_extra=SLURM_EXTRA,
    params:
        model=model_file,
        spec=get_score_field_spec,
    shell:
        "OMP_NUM_THREADS={threads} scorebench score-field --spec {params.spec:q} --model {params.model} --out {output.field} > {log} 2>&1"


rule study_figures:
    input:
        table=rules.aggregate.output.table,
        fields=get_score_field_files,
        samples=get_paper_sample_files,
    output:
        summary=report(
            study_path("summary.md"),
            caption="../report/study_summary.rst",
            category="Paper figures",
        ),
        figures=[
            report(
                study_path(f"figures/{f.shown}"),
                caption=f"../report/{f.caption}",
                category=f.category,
            )
            for f in PAPER_FIGURES
        ],
        other_formats=[
            study_path(f"figures/{name}")
            for f in PAPER_FIGURES
            for name in f.other_files
        ],
    log:
        study_path("logs/study_figures.log"),
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        slurm_extra=SLURM_EXTRA,
    params:
        samples=paper_sample_files,
        spec=get_study_figures_spec,
        out_dir=lambda wildcards, output: os.path.join(
            os.path.dirname(output.summary), "figures"
        ),
    shell:
        "OMP_NUM_THREADS={threads} scorebench study-figures --spec {params.spec:q} --table {input.table} --fields {input.fields} --samples {params.samples} --out-dir {params.out_dir} --summary {output.summary} > {log} 2>&1"
