# scorebench: a study grid (datasets × noise schedules × objectives × seeds) trained, sampled,
# evaluated and aggregated into results/{study}/. Run `snakemake --cores all` for the default
# study in config/config.yaml, or `snakemake --cores all --configfile config/studies/NAME.yaml`.

# A study given with --configfile replaces the default one: Snakemake would otherwise merge the two
# (nested dicts are updated key by key), adding the default study's presets to every other study.
# The default file is read by scorebench first, so a YAML mistake in it is one line naming its
# line (a --configfile is read by Snakemake before this file runs; see docs/configuration.md).
if not workflow.overwrite_configfiles:
    from scorebench.config_file import exit_on_error

    exit_on_error("config/config.yaml")

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# Wildcards match only the study's own preset names, so paths never parse ambiguously.
wildcard_constraints:
    dataset="|".join(STUDY.preset_names("datasets")),
    schedule="|".join(STUDY.preset_names("schedules")),
    objective="|".join(STUDY.preset_names("objectives")),
    sampler="|".join(STUDY.samplers),
    seed=r"\d+",
    shard=r"shard\d+",


include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/studies.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
