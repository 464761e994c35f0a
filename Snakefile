# scorebench: a study grid (datasets × noise schedules × objectives × seeds) trained, sampled,
# evaluated and aggregated into results/{study}/. Run `snakemake --cores all` for the default
# study in config/config.yaml, or `snakemake --cores all --configfile config/studies/NAME.yaml`.


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
