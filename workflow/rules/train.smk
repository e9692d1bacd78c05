# Training runs. One rule body, four roles: pretraining on a source task,
# random-label pretraining, training from a random init, and retraining from
# a derived init (another run's state, a barrier point, partial re-init).


checkpoint barrier_groups:
    # Which groups of a setting's runs show a barrier: E11/E13/E16 settings read it.
    input:
        shapes=lambda w: [str(PLAN.shapes_file(r)) for r in PLAN.runs_of(w.setting)],
        run_yaml=lambda w: str(PLAN.run_dir(PLAN.runs_of(w.setting)[0]) / "run.yaml"),
    output:
        f"{RESULTS}/derived/barrier_groups/{{setting}}.yaml",
    params:
        share=f"--min-share {SHAPES['group_barrier_share']}" if "group_barrier_share" in SHAPES else "",
        # Test-only (config `testing`, never in a shipped config).
        assume=" ".join(f"--assume {g}" for g in TESTING.get("barrier_groups", [])),
        cli=LINPATH,
    log:
        "logs/barrier_groups/{setting}.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "{params.cli} barrier-groups --shapes {input.shapes} --run-yaml {input.run_yaml} --out {output} "
        "{params.share} {params.assume} > {log} 2>&1"


rule train:
    input:
        states=lambda w: PLAN.state_inputs(w.run_id),
        groups=barrier_group_files,
    output:
        final=f"{RESULTS}/runs/{{run_id}}/final.pt",
        init=f"{RESULTS}/runs/{{run_id}}/init.pt",
        metrics=f"{RESULTS}/runs/{{run_id}}/metrics.parquet",
        summary=f"{RESULTS}/runs/{{run_id}}/summary.yaml",
        run_yaml=f"{RESULTS}/runs/{{run_id}}/run.yaml",
    params:
        out=lambda w: str(PLAN.run_dir(w.run_id)),
        settings=run_settings_json,
        cli=LINPATH,
    wildcard_constraints:
        run_id=run_pattern("train"),
    log:
        "logs/train/{run_id}.log",
    benchmark:
        "benchmarks/train/{run_id}.tsv"
    threads: 1
    resources:
        gpu=RES.get("gpu", 0),
        mem_mb=RES.get("train_mem_mb", 2000),
        runtime=RES.get("train_runtime", 30),
    conda:
        CONDA_ENV
    shell:
        "{params.cli} train --settings-json {params.settings:q} --out {params.out} --threads {threads} --no-progress > {log} 2>&1"


use rule train as pretrain with:
    wildcard_constraints:
        run_id=run_pattern("pretrain"),
    log:
        "logs/pretrain/{run_id}.log",
    benchmark:
        "benchmarks/pretrain/{run_id}.tsv"


use rule train as pretrain_random_labels with:
    wildcard_constraints:
        run_id=run_pattern("pretrain_random_labels"),
    log:
        "logs/pretrain_random_labels/{run_id}.log",
    benchmark:
        "benchmarks/pretrain_random_labels/{run_id}.tsv"


use rule train as retrain with:
    wildcard_constraints:
        run_id=run_pattern("retrain"),
    log:
        "logs/retrain/{run_id}.log",
    benchmark:
        "benchmarks/retrain/{run_id}.tsv"
