"""Snakemake script (rule experiment_table): one per-experiment table from the runs of its rows."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (snakemake is given to scripts)

from linpath.experiments import Plan  # noqa: E402
from linpath.tables import write_experiment_table  # noqa: E402

write_experiment_table(Plan(snakemake.config), snakemake.wildcards.table, json.loads(snakemake.params.runs),  # noqa: F821
                       json.loads(snakemake.params.skipped), snakemake.output[0], log=snakemake.log[0])  # noqa: F821
