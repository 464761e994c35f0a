"""One module per family of workflow rules; one function per rule: a spec and paths in, files out.

- train.py: `train` (one cell) and `train_pack` (the cells of a pack in one process);
- sample.py: `sample` (resumable, chunked chains of one cell and sampler);
- evaluate.py: `evaluate` (sample quality), `score_error`, `score_field`, `reference_stats`;
- group.py: `evaluate_pack` (a group of toy cells sampled and evaluated by the functions above);
- report.py: `aggregate` (the study table), `figures` and `study_figures` (the report: scorebench/report/).

The command line (cli.py) parses arguments and calls these; the Snakemake rules call the command
line. Each job turns its spec into components in one step (scorebench.components), runs the lower
layers and writes its outputs atomically, so a killed job leaves either nothing or a finished file.
"""
