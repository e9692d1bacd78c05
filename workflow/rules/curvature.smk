# Curvature along paths (config `curvature`; linpath.study.curvature_plan, linpath.paths.curvature):
#   curvature         the top Hessian eigenvalue (Lanczos) and a Hutchinson trace at every α of a run's full
#                     path θ₀ → θ_T and of the group-wise paths its setting names, in its sweep's BN modes
#   curvature_table   curvature.parquet
#   curvature_figure  results/figures/curvature.png: λ_max and the trace against α beside the loss path
# A run that did not train gives rows that say so (status skipped, with the reason), and the job completes.

# CURV (linpath.study.curvature_plan.CurvaturePlan) is planned in common.smk, beside the final targets.
# The drawing code is an input of its figure: a change to it redraws it.
CURVATURE_DRAWING = code_input("report/curvature_figures.py")


rule curvature:
    input:
        unpack(lambda w: CURV.inputs(w.run_id)),
    output:
        LAYOUT.curvature("{run_id}"),
    params:
        run=lambda w: str(LAYOUT.run_dir(w.run_id)),
        cache=str(LAYOUT.eval_cache()),
        spec=CURV.spec_json(),
        sweep=lambda w: CURV.sweep_json(w.run_id),
        groups=lambda w: CURV.args(w.run_id),
        meta=lambda w: CURV.meta(w.run_id),
    wildcard_constraints:
        run_id=one_of(CURV.runs()),
    log:
        LAYOUT.log("curvature", "{run_id}"),
    benchmark:
        LAYOUT.benchmark("curvature", "{run_id}")
    threads: 1
    resources:
        mem_mb=RES["interpolate"]["mem_mb"],
        runtime=RES["interpolate"]["runtime"],
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} curvature --run {{params.run}} --eval-cache {{params.cache}} --spec-json {{params.spec:q}} "
        "--sweep-json {params.sweep:q} {params.groups} --meta-json {params.meta:q} --out {output} "
        "--threads {threads} --no-progress > {log} 2>&1"


rule curvature_table:
    input:
        CURV.files(),
    output:
        LAYOUT.table("curvature"),
    log:
        LAYOUT.log("tables", "curvature"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} curvature-report table --inputs {{input}} --out {{output}} > {{log}} 2>&1"


rule curvature_figure:
    input:
        table=LAYOUT.table("curvature"),
        sweeps=CURV.sweeps(),
        drawing=CURVATURE_DRAWING,
    output:
        report(LAYOUT.figure("curvature"), caption="../report/curvature.rst", category="Beyond the paper"),
    log:
        LAYOUT.log("figures", "curvature"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} curvature-report figure --table {{input.table}} --sweeps {{input.sweeps}} --out {{output}} "
        "> {log} 2>&1"
