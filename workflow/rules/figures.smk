# Figures: one job per experiment (from that experiment's runs alone), and the Figure A11 overview.
# Each experiment is also a target by name: `snakemake --cores 2 E5` draws its figure and tables.

# The drawing code is an input of every figure: a change to linpath/report/figures.py redraws them all, and no
# table or run (common.smk, code_input).
DRAWING = code_input("report/figures.py")


rule experiment_figure:
    input:
        **runs_input("experiment_figure", "experiment"),
        config=job_config("experiment_figure", "experiment"),
        drawing=DRAWING,
    output:
        report(LAYOUT.figure("{experiment}"), caption="../report/experiment.rst", category="Experiments",
               labels=lambda w: {"experiment": w.experiment}),
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
        f"{LINPATH} report figure {{wildcards.experiment}} --configfile {{input.config}} {HANDED_RUNS} "
        "--out {output} > {log} 2>&1"


rule figure_a11:
    input:
        paths=LAYOUT.table("paths"),
        shapes=LAYOUT.table("shapes"),
        table1=LAYOUT.table("table1"),
        runs=LAYOUT.table("runs"),
        config=job_config("figure_a11"),
        drawing=DRAWING,
    output:
        png=report(LAYOUT.figure("figure_A11"), caption="../report/figure_a11.rst", category="Overview"),
        pdf=LAYOUT.figure("figure_A11", ".pdf"),
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
        "--table1 {input.table1} --runs {input.runs} --out {output.png} {output.pdf} > {log} 2>&1"


for _experiment in PLAN.experiments:

    rule:
        name:
            _experiment
        input:
            [str(LAYOUT.figure(_experiment))] if _experiment in EXPERIMENT_FIGURES else [],
            [str(LAYOUT.table(t)) for t, e in EXPERIMENT_TABLES.items() if e == _experiment],
        localrule: True
