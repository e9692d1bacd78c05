"""Snakemake script (rule figure_a11): the overview of every intervention, from the long tables."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (snakemake is given to scripts)

from linpath.experiments import Plan  # noqa: E402
from linpath.figures import figure_a11  # noqa: E402

i = snakemake.input  # noqa: F821
figure_a11(Plan(snakemake.config), i.paths, i.shapes, i.table1, i.runs, snakemake.output.png,  # noqa: F821
           log=snakemake.log[0])  # noqa: F821
