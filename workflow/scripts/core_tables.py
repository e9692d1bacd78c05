"""Snakemake script (rule core_tables): runs / paths / shapes tables over every run."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (snakemake is given to scripts)

from linpath.experiments import Plan  # noqa: E402
from linpath.tables import write_core_tables  # noqa: E402

write_core_tables(Plan(snakemake.config), json.loads(snakemake.params.runs), json.loads(snakemake.params.skipped),  # noqa: F821
                  log=snakemake.log[0])  # noqa: F821
