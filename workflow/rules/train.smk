# Training runs. One rule body, four roles: pretraining on a source task,
# random-label pretraining, training from a random init, and retraining from
# a derived init (another run's state, a barrier point, partial re-init).


rule train:
    input:
        settings=f"{RESULTS}/settings/{{run_id}}.yaml",
        states=lambda w: PLAN.state_inputs(w.run_id),
    output:
        final=f"{RESULTS}/runs/{{run_id}}/final.pt",
        init=f"{RESULTS}/runs/{{run_id}}/init.pt",
        metrics=f"{RESULTS}/runs/{{run_id}}/metrics.parquet",
        summary=f"{RESULTS}/runs/{{run_id}}/summary.yaml",
        run_yaml=f"{RESULTS}/runs/{{run_id}}/run.yaml",
    params:
        out=lambda w: str(PLAN.run_dir(w.run_id)),
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
    shell:
        "linpath train --config {input.settings} --out {params.out} --threads {threads} --no-progress > {log} 2>&1"


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
