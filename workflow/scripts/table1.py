"""Snakemake script (rule table1): Table 1 from the runs and shapes tables."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (snakemake is given to scripts)

from linpath.experiments import Plan  # noqa: E402
from linpath.tables import write_table1  # noqa: E402

write_table1(Plan(snakemake.config), snakemake.input.runs, snakemake.input.shapes,  # noqa: F821
             snakemake.output.table, snakemake.output.markdown, log=snakemake.log[0])  # noqa: F821
