# Figures: one per experiment of the catalogue, and the Figure A11 overview.


rule experiment_figures:
    # All experiment figures in one job (each needs the same aggregated table).
    input:
        paths=f"{RESULTS}/tables/paths.parquet",
    output:
        [
            report(
                f"{RESULTS}/figures/{e}.png",
                caption="../report/experiment.rst",
                category="Experiments",
                labels={"experiment": e},
            )
            for e in EXPERIMENT_FIGURES
        ],
    log:
        "logs/figures/experiment_figures.log",
    resources:
        mem_mb=2000,
        runtime=10,
    run:
        from linpath.figures import write_experiment_figures

        write_experiment_figures(PLAN, EXPERIMENT_FIGURES, input.paths, list(output), log[0])


rule figure_a11:
    input:
        paths=f"{RESULTS}/tables/paths.parquet",
        shapes=f"{RESULTS}/tables/shapes.parquet",
        table1=f"{RESULTS}/tables/table1.parquet",
        runs=f"{RESULTS}/tables/runs.parquet",
    output:
        png=report(f"{RESULTS}/figures/figure_A11.png", caption="../report/figure_a11.rst", category="Overview"),
        pdf=f"{RESULTS}/figures/figure_A11.pdf",
    log:
        "logs/figures/figure_a11.log",
    resources:
        mem_mb=2000,
        runtime=10,
    run:
        from linpath.figures import figure_a11

        figure_a11(PLAN, input.paths, input.shapes, input.table1, input.runs, output.png, log[0])
