# Aggregation: long tables over all runs, Table 1, and the per-experiment tables.


rule core_tables:
    input:
        # Separate items: the static runs are scheduled at once, the E5 ones once their checkpoint ran.
        static=run_outputs([r for r, run in PLAN.runs.items() if not run.barrier_from]),
        barrier_checks=barrier_checks(),
        barrier=lambda w: run_outputs(barrier_runs()),
    output:
        runs=f"{RESULTS}/tables/runs.parquet",
        paths=f"{RESULTS}/tables/paths.parquet",
        shapes=f"{RESULTS}/tables/shapes.parquet",
    params:
        runs=lambda w: included_runs(),
    log:
        "logs/tables/core_tables.log",
    resources:
        mem_mb=4000,
        runtime=20,
    run:
        from linpath.tables import write_core_tables

        write_core_tables(PLAN, params.runs, f"{RESULTS}/tables", log[0])


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
