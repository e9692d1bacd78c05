# Aggregation: long tables over all runs, Table 1, and the per-experiment tables.


rule core_tables:
    input:
        # Separate items: the static runs are scheduled at once, the measured ones (E5, E11/E13/E16)
        # once the checkpoints that decide them ran; all those checkpoints are plain inputs here.
        static=run_outputs([r for r in PLAN.runs if not PLAN.measured(r)]),
        measurements=measurement_files(),
        measured=lambda w: run_outputs(measured_runs()),
    output:
        runs=f"{RESULTS}/tables/runs.parquet",
        paths=f"{RESULTS}/tables/paths.parquet",
        shapes=f"{RESULTS}/tables/shapes.parquet",
    params:
        runs=lambda w: included_runs(),
        skipped=lambda w: skipped_runs(),
    log:
        "logs/tables/core_tables.log",
    resources:
        mem_mb=4000,
        runtime=20,
    run:
        from linpath.tables import write_core_tables

        write_core_tables(PLAN, params.runs, f"{RESULTS}/tables", log[0], skipped=params.skipped)


rule summary_tables:
    # Table 1 and every per-experiment table in one job: each is cheap, a job is not.
    input:
        runs=f"{RESULTS}/tables/runs.parquet",
        shapes=f"{RESULTS}/tables/shapes.parquet",
    output:
        table1=f"{RESULTS}/tables/table1.parquet",
        markdown=f"{RESULTS}/tables/table1.md",
        experiments=[f"{RESULTS}/tables/{t}.parquet" for t in EXPERIMENT_TABLES],
    log:
        "logs/tables/summary_tables.log",
    resources:
        mem_mb=2000,
        runtime=10,
    run:
        from linpath.tables import write_summary_tables

        write_summary_tables(PLAN, REFERENCE, f"{RESULTS}/tables", log[0])
