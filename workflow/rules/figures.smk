# Figures: one job per experiment (from that experiment's runs alone), and the Figure A11 overview.
# Each experiment is also a target by name: `snakemake --cores 2 E5` draws its figure and tables.

# The drawing code's version: raise it with any change to how linpath/report/figures.py draws, and every figure is
# redrawn (a params change is one of Snakemake's rerun triggers); tables and runs are left alone.
FIGURES_VERSION = 4


rule experiment_figure:
    input:
        **runs_input(figure_runs),
        config=job_config("experiment_figure", "experiment"),
    output:
        report(LAYOUT.figure("{experiment}"), caption="../report/experiment.rst", category="Experiments",
               labels=lambda w: {"experiment": w.experiment}),
    params:
        **runs_params(figure_runs),
        drawing=FIGURES_VERSION,
    wildcard_constraints:
        experiment=one_of(EXPERIMENT_FIGURES),
    log:
        LAYOUT.log("figures", "{experiment}"),
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} report figure {{wildcards.experiment}} --configfile {{input.config}} --runs-json {{params.runs:q}} "
        "--out {output} > {log} 2>&1"


rule figure_a11:
    input:
        paths=LAYOUT.table("paths"),
        shapes=LAYOUT.table("shapes"),
        table1=LAYOUT.table("table1"),
        runs=LAYOUT.table("runs"),
        config=job_config("figure_a11"),
    output:
        png=report(LAYOUT.figure("figure_A11"), caption="../report/figure_a11.rst", category="Overview"),
        pdf=LAYOUT.figure("figure_A11", ".pdf"),
    params:
        drawing=FIGURES_VERSION,
    log:
        LAYOUT.log("figures", "figure_a11"),
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} report figure-a11 --configfile {{input.config}} --paths {{input.paths}} --shapes {{input.shapes}} "
        "--table1 {input.table1} --runs {input.runs} --out {output.png} > {log} 2>&1"


for _experiment in PLAN.experiments:

    rule:
        name:
            _experiment
        input:
            [str(LAYOUT.figure(_experiment))] if _experiment in EXPERIMENT_FIGURES else [],
            [str(LAYOUT.table(t)) for t, e in EXPERIMENT_TABLES.items() if e == _experiment],
        localrule: True
