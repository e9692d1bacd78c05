"""Snakemake script (rule experiment_figure): one experiment's figure from its runs' sweeps."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (snakemake is given to scripts)

from linpath.experiments import Plan  # noqa: E402
from linpath.figures import write_experiment_figure  # noqa: E402

write_experiment_figure(Plan(snakemake.config), snakemake.wildcards.experiment, json.loads(snakemake.params.runs),  # noqa: F821
                        snakemake.output[0], log=snakemake.log[0])  # noqa: F821
