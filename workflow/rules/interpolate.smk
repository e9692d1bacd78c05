# Loss and accuracy along the linear paths of every run (its sweep), and apart from it their shape labels:
# a changed threshold under `shapes:` relabels every stored sweep in seconds and measures nothing again.


rule interpolate:
    input:
        outcome=LAYOUT.run_file("{run_id}", "outcome"),
        settings=LAYOUT.run_file("{run_id}", "settings"),
    output:
        sweep=LAYOUT.sweep("{run_id}"),
    params:
        run=lambda w: str(LAYOUT.run_dir(w.run_id)),
        cache=str(LAYOUT.eval_cache()),
        sweep=lambda w: as_json(PLAN.sweep_spec(PLAN.runs[w.run_id].setting)),
    log:
        LAYOUT.log("interpolate", "{run_id}"),
    benchmark:
        LAYOUT.benchmark("interpolate", "{run_id}")
    threads: 1
    priority: lambda w: PLAN.waiting_generations(w.run_id)  # runs that others wait on go first
    resources:
        mem_mb=RES["interpolate"]["mem_mb"],
        runtime=RES["interpolate"]["runtime"],
    group:
        "run_{run_id}"  # with the training of the same run (train.smk)
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} interpolate --run {{params.run}} --eval-cache {{params.cache}} --run-id {{wildcards.run_id}} "
        "--out {output.sweep} --sweep-json {params.sweep:q} --threads {threads} --no-progress > {log} 2>&1"


rule label:
    # Δ, α_half and the NB / B / P label of every path of a run, with the thresholds beside each label.
    input:
        sweep=LAYOUT.sweep("{run_id}"),
    output:
        shapes=LAYOUT.shapes("{run_id}"),
    params:
        thresholds=as_json(PLAN.thresholds()),
    log:
        LAYOUT.log("label", "{run_id}"),
    priority: lambda w: PLAN.waiting_generations(w.run_id)
    localrule: True  # seconds, no torch work: runs where Snakemake runs
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} label --sweep {{input.sweep}} --out {{output.shapes}} --thresholds-json {{params.thresholds:q}} "
        "> {log} 2>&1"
