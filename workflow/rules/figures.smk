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
    resources:
        mem_mb=2000,
        runtime=10,
    run:
        import pandas as pd
        from linpath.figures import experiment_figure

        paths = pd.read_parquet(input.paths)
        for experiment, out in zip(EXPERIMENT_FIGURES, output):
            experiment_figure(PLAN, experiment, paths, out)


rule figure_a11:
    input:
        paths=f"{RESULTS}/tables/paths.parquet",
        shapes=f"{RESULTS}/tables/shapes.parquet",
        table1=f"{RESULTS}/tables/table1.parquet",
        runs=f"{RESULTS}/tables/runs.parquet",
    output:
        png=report(f"{RESULTS}/figures/figure_A11.png", caption="../report/figure_a11.rst", category="Overview"),
        pdf=f"{RESULTS}/figures/figure_A11.pdf",
    resources:
        mem_mb=2000,
        runtime=10,
    run:
        from linpath.figures import figure_a11

        figure_a11(PLAN, input.paths, input.shapes, input.table1, input.runs, output.png)
