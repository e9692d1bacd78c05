# Tables: the long tables over every run, Table 1, and one job per experiment table.


rule core_tables:
    # runs / paths / shapes over every run: Table 1 and Figure A11 are the only targets that need them.
    input:
        **runs_input(all_runs),
    output:
        runs=LAYOUT.table("runs"),
        paths=LAYOUT.table("paths"),
        shapes=LAYOUT.table("shapes"),
    params:
        **runs_params(all_runs),
    log:
        LAYOUT.log("tables", "core_tables"),
    resources:
        mem_mb=4000,
        runtime=20,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/core_tables.py"


rule table1:
    input:
        runs=LAYOUT.table("runs"),
        shapes=LAYOUT.table("shapes"),
    output:
        table=LAYOUT.table("table1"),
        markdown=LAYOUT.table("table1", ".md"),
    log:
        LAYOUT.log("tables", "table1"),
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/table1.py"


rule experiment_table:
    # One per-experiment table (Tab. A2, A3, A4, ...) from the runs of its rows alone.
    input:
        **runs_input(table_runs),
    output:
        LAYOUT.table("{table}"),
    params:
        **runs_params(table_runs),
    wildcard_constraints:
        table=one_of(EXPERIMENT_TABLES),
    log:
        LAYOUT.log("tables", "{table}"),
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/experiment_table.py"
