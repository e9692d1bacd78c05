# Loss and accuracy along the linear paths of every run (its sweep), with their shape metrics.


rule interpolate:
    input:
        outcome=LAYOUT.run_file("{run_id}", "outcome"),
        settings=LAYOUT.run_file("{run_id}", "settings"),
    output:
        sweep=LAYOUT.sweep("{run_id}"),
        shapes=LAYOUT.shapes("{run_id}"),
    params:
        run=lambda w: str(LAYOUT.run_dir(w.run_id)),
        cache=str(LAYOUT.eval_cache()),
        sweep=lambda w: as_json(PLAN.sweep_spec(PLAN.runs[w.run_id].setting)),
        thresholds=as_json(PLAN.thresholds()),
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
        LINPATH + " interpolate --run {params.run} --eval-cache {params.cache} --run-id {wildcards.run_id} "
        "--out {output.sweep} --shapes {output.shapes} --sweep-json {params.sweep:q} "
        "--thresholds-json {params.thresholds:q} --threads {threads} --no-progress > {log} 2>&1"
