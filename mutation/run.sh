#!/usr/bin/env bash
# Mutation testing of the science core: every function of linpath.shapes, linpath.barrier and
# linpath.tables, the labelling rule (linpath.hparams.ShapeThresholds) and the rank-correlation code of
# linpath.figures, against the fast tests listed in
# setup.cfg. Not part of CI. Usage: bash mutation/run.sh [--fresh] [--max-children N]
#   --fresh          forget earlier results (mutmut otherwise re-tests only what changed)
#   --max-children   parallel workers (default 2: the two cores of the project's machines)
set -euo pipefail
cd "$(dirname "$0")"
# mutmut names a mutant after its file's path from here; the tests import `linpath`, so `linpath` must be
# a folder here: links to the real package and tests (scratch, not committed).
ln -sfn ../workflow/linpath linpath
ln -sfn ../tests tests
SCOPE=("linpath.shapes.*" "linpath.barrier.*" "linpath.tables.*" "linpath.hparams.xǁShapeThresholdsǁbarrier_threshold__*"
       "linpath.hparams.xǁShapeThresholdsǁrule__*"
       "linpath.figures.x_shape_vs_accuracy__*" "linpath.figures.x_rank_correlations__*")
CHILDREN=2
while [ $# -gt 0 ]; do
    case "$1" in
        --fresh) rm -rf mutants ;;
        --max-children) CHILDREN="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per worker: the workers are the parallelism
start=$(date +%s)
mutmut run --max-children "$CHILDREN" "${SCOPE[@]}" > mutants.log 2>&1 || { tail -n 40 mutants.log; exit 1; }
echo "mutmut run: $(( $(date +%s) - start )) s wall, $CHILDREN workers (log: mutation/mutants.log)"
python score.py "${SCOPE[@]}"
