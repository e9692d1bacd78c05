# Beyond the straight line from θ₀ (config `instability`, settings.<name>.spawn, `plane`, `planes`):
#   spawn               trains a child spawned from a run after epoch k (the train rule's body, own logs)
#   lmc_path            straight lines between the final states of a pair: the children of one spawn, or a
#                       run and another seed's (linpath.paths.lmc); both BN modes, both splits. Pair
#                       independent_aligned: the same two runs after weight matching, without and with
#                       REPAIR (linpath.paths.align; `instability.align`)
#   instability_table   instability.parquet (barriers per setting, seed, k, BN mode, split) + lmc_paths.parquet
#   instability_figure  results/figures/instability.png
#   plane               a loss plane through three states of one run, with its projected trajectory; or
#                       (directions: random) a random plane and line around one state (linpath.paths.planes)
#   planes_table        planes.parquet
#   plane_figure        results/figures/plane_<name>.png
# Every job that reads a run's states waits for its outcome.yaml; a run that did not train gives rows
# that say so (status skipped, with the reason), and the job completes.

# The drawing code (linpath/report/lmc_figures.py) is an input of its figures: a change to it redraws them.
LMC_DRAWING = code_input("report/lmc_figures.py")


use rule train as spawn with:
    wildcard_constraints:
        run_id=run_pattern("spawn"),
    log:
        LAYOUT.log("spawn", "{run_id}"),
    benchmark:
        LAYOUT.benchmark("spawn", "{run_id}")


rule lmc_path:
    input:
        ends=lambda w: LMC.pair_inputs(w.run_id, w.pair),
    output:
        LAYOUT.lmc_sweep("{run_id}", "{pair}"),
    params:
        ends=lambda w: LMC.pair_args(w.run_id, w.pair),
        cache=str(LAYOUT.eval_cache()),
        sweep=lambda w: LMC.sweep_json(w.run_id, w.pair),
        meta=lambda w: json.dumps(LMC.meta(LMC.pairs[(w.run_id, w.pair)]), sort_keys=True),
    wildcard_constraints:
        run_id=one_of(LMC.spawning_runs()),
        pair=one_of(LMC.pair_names()),
    log:
        LAYOUT.log("lmc_path", "{run_id}_{pair}"),
    benchmark:
        LAYOUT.benchmark("lmc_path", "{run_id}_{pair}")
    threads: 1
    resources:
        mem_mb=RES["interpolate"]["mem_mb"],
        runtime=RES["interpolate"]["runtime"],
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} lmc-path {{params.ends}} --eval-cache {{params.cache}} --sweep-json {{params.sweep:q}} "
        "--meta-json {params.meta:q} --out {output} --threads {threads} --no-progress > {log} 2>&1"


rule instability_table:
    input:
        LMC.pair_files(),
    output:
        table=LAYOUT.table("instability"),
        paths=LAYOUT.table("lmc_paths"),
    params:
        threshold=LMC.instability.threshold,
    log:
        LAYOUT.log("tables", "instability"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} lmc-report instability --inputs {{input}} --threshold {{params.threshold}} "
        "--out {output.table} {output.paths} > {log} 2>&1"


rule instability_figure:
    input:
        table=LAYOUT.table("instability"),
        paths=LAYOUT.table("lmc_paths"),
        drawing=LMC_DRAWING,
    output:
        report(LAYOUT.figure("instability"), caption="../report/instability.rst", category="Beyond the paper"),
    log:
        LAYOUT.log("figures", "instability"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} lmc-report instability-figure --table {{input.table}} --paths {{input.paths}} --out {{output}} > {{log}} 2>&1"


rule plane:
    input:
        reads=lambda w: LMC.plane_inputs(w.plane, w.run_id),
    output:
        LAYOUT.plane_sweep("{plane}", "{run_id}"),
    params:
        run=lambda w: str(LAYOUT.run_dir(w.run_id)),
        states=lambda w: LMC.plane_args(w.plane, w.run_id),
        spec=lambda w: LMC.plane_json(LMC.planes[(w.plane, w.run_id)]),
        meta=lambda w: json.dumps(LMC.plane_meta(LMC.planes[(w.plane, w.run_id)]), sort_keys=True),
        cache=str(LAYOUT.eval_cache()),
        scratch=str(LAYOUT.scratch()),
    wildcard_constraints:
        plane=one_of(LMC.plane_names()),
        run_id=one_of(LMC.plane_runs()),
    log:
        LAYOUT.log("plane", "{plane}_{run_id}"),
    benchmark:
        LAYOUT.benchmark("plane", "{plane}_{run_id}")
    threads: 1
    resources:
        mem_mb=RES["interpolate"]["mem_mb"],
        runtime=RES["interpolate"]["runtime"],
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} plane --run {{params.run}} {{params.states}} --eval-cache {{params.cache}} "
        "--spec-json {params.spec:q} --meta-json {params.meta:q} --scratch {params.scratch} --out {output} "
        "--threads {threads} --no-progress > {log} 2>&1"


rule planes_table:
    input:
        LMC.plane_files(),
    output:
        LAYOUT.table("planes"),
    log:
        LAYOUT.log("tables", "planes"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} lmc-report planes --inputs {{input}} --out {{output}} > {{log}} 2>&1"


rule plane_figure:
    input:
        planes=lambda w: LMC.plane_files(w.plane),
        drawing=LMC_DRAWING,
    output:
        report(LAYOUT.figure("plane_{plane}"), caption="../report/plane.rst", category="Beyond the paper",
               labels=lambda w: {"plane": w.plane}),
    wildcard_constraints:
        plane=one_of(LMC.plane_names()),
    log:
        LAYOUT.log("figures", "plane_{plane}"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} lmc-report plane-figure --inputs {{input.planes}} --out {{output}} > {{log}} 2>&1"
