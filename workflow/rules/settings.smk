# Concrete run settings, and which groups of a setting show barriers (measured).


rule run_settings:
    input:
        groups=barrier_group_files,
    output:
        f"{RESULTS}/settings/{{run_id}}.yaml",
    localrule: True
    run:
        from linpath.tables import write_run_settings

        write_run_settings(PLAN, wildcards.run_id, list(input.groups), output[0])


checkpoint barrier_groups:
    input:
        shapes=lambda w: [str(PLAN.shapes_file(r)) for r in PLAN.runs_of(w.setting)],
        run_yaml=lambda w: str(PLAN.run_dir(PLAN.runs_of(w.setting)[0]) / "run.yaml"),
    output:
        f"{RESULTS}/derived/barrier_groups/{{setting}}.yaml",
    localrule: True
    run:
        from linpath.tables import write_barrier_groups

        write_barrier_groups(list(input.shapes), input.run_yaml, output[0])
