# Barrier-height extraction (E5): a checkpoint, because whether a run's path
# has a barrier decides which retraining runs exist.


checkpoint barrier_init:
    input:
        paths=f"{RESULTS}/paths/{{run_id}}.parquet",
    output:
        yaml=f"{RESULTS}/derived/barrier/{{run_id}}/barrier.yaml",
    params:
        out=lambda w: str(PLAN.barrier_dir(w.run_id)),
        offset=f"--offset {SHAPES['barrier_offset']}" if "barrier_offset" in SHAPES else "",
        thresholds=" ".join(threshold_args(config)),
        # Test-only (config `testing`, never in a shipped config): pretend a barrier where none was measured.
        assume=f"--assume-barrier-at {TESTING['barrier_alpha']}" if "barrier_alpha" in TESTING else "",
        cli=LINPATH,
    log:
        "logs/barrier/{run_id}.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        CONDA_ENV
    shell:
        "{params.cli} barrier-init --paths {input.paths} --out {params.out} {params.offset} "
        "{params.thresholds} {params.assume} > {log} 2>&1"
