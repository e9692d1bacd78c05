# linpath: linear interpolation of loss landscapes, from training to Table 1.
# `snakemake --cores 2` runs the embedded default (config/config.yaml);
# `--configfile config/paper.yaml` the paper's scale. Stages live in workflow/rules/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


rule all:
    input:
        final_targets(),
    default_target: True


include: "workflow/rules/train.smk"
include: "workflow/rules/barrier.smk"
include: "workflow/rules/interpolate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/lmc.smk"
include: "workflow/rules/curvature.smk"
