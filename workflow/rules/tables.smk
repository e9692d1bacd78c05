# Tables: the long tables over every run, Table 1, and one job per experiment table.
# Table and figure jobs read their own copy of the config (rule job_config) through `linpath report`,
# so a local run forks them warm like every other linpath command.


rule config_record:
    # The workflow config as a whole (for `linpath report so-far` and the reader), rewritten when it changes
    # (its digest is the param). No job reads it: tables and figures read their own copies (job_config).
    output:
        CONFIG_RECORD,
    params:
        digest=digest(config),
        config=config_json,  # a function of `input`: not compared for reruns (the digest above is)
    log:
        LAYOUT.log("tables", "config_record"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        WRITE_CONFIG


rule job_config:
    # The config as one table or figure job reads it, rewritten only when the parts that job reads change
    # (their digest is the param; linpath.study.config.job_reads).
    output:
        LAYOUT.job_config("{job}"),
    params:
        digest=lambda w: digest(job_reads_of(w.job)),
        config=config_json,
    wildcard_constraints:
        job=one_of(["core_tables", "table1", "table1_sensitivity", "figure_a11",
                    *(f"experiment_table-{t}" for t in EXPERIMENT_TABLES),
                    *(f"experiment_figure-{e}" for e in EXPERIMENT_FIGURES)]),
    log:
        LAYOUT.log("job_config", "{job}"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        WRITE_CONFIG


rule core_tables:
    # runs / paths / shapes over every run: Table 1 and Figure A11 are the only targets that need them.
    input:
        **runs_input("core_tables"),
        config=job_config("core_tables"),
    output:
        runs=LAYOUT.table("runs"),
        paths=LAYOUT.table("paths"),
        shapes=LAYOUT.table("shapes"),
    log:
        LAYOUT.log("tables", "core_tables"),
    resources:
        mem_mb=4000,
        runtime=20,
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} report core-tables --configfile {{input.config}} {HANDED_RUNS} "
        "--out {output.runs} {output.paths} {output.shapes} > {log} 2>&1"


# The settings whose barrier groups other settings read (E11, E13, E16).
GROUP_LISTS = PLAN.group_list_settings()


rule table1_sensitivity:
    # Table 1 relabelled over a grid of thresholds (config `shapes.sensitivity`), from shapes.parquet alone: no
    # new sweep. table1.md states how many rows it finds robust. Beside it, the barrier groups each group rule
    # of the grid picks in every setting whose groups others read, against the barrier-groups files used.
    input:
        runs=LAYOUT.table("runs"),
        shapes=LAYOUT.table("shapes"),
        config=job_config("table1_sensitivity"),
        groups=[str(LAYOUT.groups_file(s)) for s in GROUP_LISTS],
    output:
        table=LAYOUT.table("table1_sensitivity"),
        markdown=LAYOUT.table("table1_sensitivity", ".md"),
        groups=LAYOUT.table("table1_sensitivity_groups"),
        html=report(LAYOUT.table("table1_sensitivity", ".html"), caption="../report/table1_sensitivity.rst",
                    category="Tables"),
    log:
        LAYOUT.log("tables", "table1_sensitivity"),
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} report table1-sensitivity --configfile {{input.config}} --runs {{input.runs}} --shapes {{input.shapes}} "
        "--groups {input.groups} --out {output.table} {output.markdown} {output.groups} {output.html} "
        "> {log} 2>&1"


rule table1:
    input:
        runs=LAYOUT.table("runs"),
        shapes=LAYOUT.table("shapes"),
        sensitivity=LAYOUT.table("table1_sensitivity"),
        config=job_config("table1"),
        # the barrier groups whose own paths make a row's shape (`shape_from: barrier_groups`)
        groups=[str(LAYOUT.groups_file(s)) for s in PLAN.table1_group_references()],
    output:
        table=LAYOUT.table("table1"),
        markdown=LAYOUT.table("table1", ".md"),
        html=report(LAYOUT.table("table1", ".html"), caption="../report/table1.rst", category="Tables"),
    log:
        LAYOUT.log("tables", "table1"),
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} report table1 --configfile {{input.config}} --runs {{input.runs}} --shapes {{input.shapes}} "
        "--sensitivity {input.sensitivity} --groups {input.groups} --out {output.table} {output.markdown} {output.html} "
        "> {log} 2>&1"


rule experiment_table:
    # One per-experiment table (Tab. A2, A3, A4, ...) from the runs of its rows alone.
    input:
        **runs_input("experiment_table", "table"),
        config=job_config("experiment_table", "table"),
    output:
        LAYOUT.table("{table}"),
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
    shell:
        f"{LINPATH} report table {{wildcards.table}} --configfile {{input.config}} {HANDED_RUNS} "
        "--out {output} > {log} 2>&1"
