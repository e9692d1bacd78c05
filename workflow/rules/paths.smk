# Loss and accuracy along the linear paths of every run, with their shape metrics.


rule interpolate:
    input:
        final=f"{RESULTS}/runs/{{run_id}}/final.pt",
        run_yaml=f"{RESULTS}/runs/{{run_id}}/run.yaml",
    output:
        paths=f"{RESULTS}/paths/{{run_id}}.parquet",
        shapes=f"{RESULTS}/shapes/{{run_id}}.parquet",
    params:
        run=lambda w: str(PLAN.run_dir(w.run_id)),
        cache=f"{RESULTS}/cache/eval",
        args=lambda w: " ".join(PLAN.interpolate_args(w.run_id)),
        cli=LINPATH,
    log:
        "logs/interpolate/{run_id}.log",
    benchmark:
        "benchmarks/interpolate/{run_id}.tsv"
    threads: 1
    resources:
        gpu=RES.get("gpu", 0),
        mem_mb=RES.get("paths_mem_mb", 2000),
        runtime=RES.get("paths_runtime", 30),
    conda:
        CONDA_ENV
    shell:
        "{params.cli} interpolate --run {params.run} --eval-cache {params.cache} --run-id {wildcards.run_id} "
        "--out {output.paths} --shapes {output.shapes} {params.args} --threads {threads} --no-progress > {log} 2>&1"
