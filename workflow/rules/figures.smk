# Figures: one job per experiment (from that experiment's runs alone), and the Figure A11 overview.
# Each experiment is also a target by name: `snakemake --cores 2 E5` draws its figure and tables.


rule experiment_figure:
    input:
        **runs_input(figure_runs),
    output:
        report(LAYOUT.figure("{experiment}"), caption="../report/experiment.rst", category="Experiments",
               labels=lambda w: {"experiment": w.experiment}),
    params:
        **runs_params(figure_runs),
        code=lambda w: figure_code(w.experiment),  # redraw when the code of this figure's kind changes
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
    script:
        "../scripts/experiment_figure.py"


rule figure_a11:
    input:
        paths=LAYOUT.table("paths"),
        shapes=LAYOUT.table("shapes"),
        table1=LAYOUT.table("table1"),
        runs=LAYOUT.table("runs"),
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
    script:
        "../scripts/figure_a11.py"


for _experiment in PLAN.experiments:

    rule:
        name:
            _experiment
        input:
            [str(LAYOUT.figure(_experiment))] if _experiment in EXPERIMENT_FIGURES else [],
            [str(LAYOUT.table(t)) for t, e in EXPERIMENT_TABLES.items() if e == _experiment],
        localrule: True
