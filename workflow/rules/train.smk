# Training runs. One rule body, four roles: pretraining on a source task, random-label pretraining,
# training from a random init, and retraining from a derived init (another run's state, a barrier
# point, partial re-init).
# A run's one declared output besides run.yaml is outcome.yaml (linpath.foundations.outcome): a run that diverges or
# misses a required target ends there with its reason, and its job completes; states (final.pt, init.pt,
# epoch_<k>.pt) exist only when it trained. Jobs that read a run wait for its outcome.yaml.


rule train:
    input:
        states=state_files,
        groups=barrier_group_files,
    output:
        **{what: str(LAYOUT.run_file("{run_id}", what)) for what in ("outcome", "settings")},
    params:
        out=lambda w: str(LAYOUT.run_dir(w.run_id)),
        settings=run_settings_json,
        barrier=barrier_decision,
    wildcard_constraints:
        run_id=run_pattern("train"),
    log:
        LAYOUT.log("train", "{run_id}"),
    benchmark:
        LAYOUT.benchmark("train", "{run_id}")
    threads: 1
    priority: lambda w: PLAN.waiting_generations(w.run_id)  # runs that others wait on go first
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
    group:
        "run_{run_id}"  # one cluster job trains a run and sweeps its paths (sequential; GPU requests are not added)
    conda:
        CONDA_ENV
    shell:
        f"{LINPATH} train --settings-json {{params.settings:q}} --out {{params.out}} --upstream {{input.states}} "
        "--failure-as-outcome --threads {threads} --no-progress > {log} 2>&1"


use rule train as pretrain with:
    wildcard_constraints:
        run_id=run_pattern("pretrain"),
    log:
        LAYOUT.log("pretrain", "{run_id}"),
    benchmark:
        LAYOUT.benchmark("pretrain", "{run_id}")


use rule train as pretrain_random_labels with:
    wildcard_constraints:
        run_id=run_pattern("pretrain_random_labels"),
    log:
        LAYOUT.log("pretrain_random_labels", "{run_id}"),
    benchmark:
        LAYOUT.benchmark("pretrain_random_labels", "{run_id}")


use rule train as retrain with:
    wildcard_constraints:
        run_id=run_pattern("retrain"),
    log:
        LAYOUT.log("retrain", "{run_id}"),
    benchmark:
        LAYOUT.benchmark("retrain", "{run_id}")
