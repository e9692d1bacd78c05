# Barrier extraction: checkpoints, because measured shapes decide which runs exist.
#   barrier_init    (E5) the states at and around the barrier of a run's full path, if it has one
#   barrier_groups  (E11, E13, E16) which groups of a setting's runs have barriers


checkpoint barrier_init:
    input:
        sweep=LAYOUT.sweep("{run_id}"),
        outcome=LAYOUT.run_file("{run_id}", "outcome"),
    output:
        yaml=LAYOUT.barrier_yaml("{run_id}"),
    params:
        out=lambda w: str(LAYOUT.barrier_dir(w.run_id)),
        offset=f"--offset {SHAPES['barrier_offset']}" if "barrier_offset" in SHAPES else "",
        thresholds=as_json(PLAN.thresholds()),
    log:
        LAYOUT.log("barrier_init", "{run_id}"),
    localrule: True  # CPU only, seconds: runs where Snakemake runs
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} barrier-init --sweep {{input.sweep}} --outcome {{input.outcome}} --out {{params.out}} {{params.offset}} "
        "--thresholds-json {params.thresholds:q} > {log} 2>&1"


checkpoint barrier_groups:
    input:
        shapes=lambda w: [str(LAYOUT.shapes(r)) for r in PLAN.runs_of(w.setting)],
        settings=lambda w: str(LAYOUT.run_file(PLAN.runs_of(w.setting)[0], "settings")),
    output:
        LAYOUT.groups_file("{setting}"),
    params:
        # The rule that decides (config `shapes.barrier_groups`; {}: linpath.foundations.hparams.GroupRule's defaults).
        rule=json.dumps(SHAPES.get("barrier_groups", {}), sort_keys=True),
        # Which groups are candidates, per architecture family (config `shapes.layer_groups`; {}: the defaults).
        layer_groups=json.dumps(SHAPES.get("layer_groups", {}), sort_keys=True),
    log:
        LAYOUT.log("barrier_groups", "{setting}"),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} barrier-groups --shapes {{input.shapes}} --run-yaml {{input.settings}} --out {{output}} "
        "--layer-groups-json {params.layer_groups:q} --rule-json {params.rule:q} > {log} 2>&1"
