#!/usr/bin/env bash
# Mutation testing of the science core: every function of linpath.paths.shapes, linpath.paths.barrier,
# linpath.report.tables, the linear mode connectivity paths (linpath.paths.lmc), the planes
# (linpath.paths.planes), the spawned children (linpath.study.spawn) and the threshold sensitivity
# (linpath.report.sensitivity), the distance travelled (linpath.engine.train.distances), the labelling rule
# (linpath.foundations.hparams.ShapeThresholds) and the rank-correlation code of linpath.report.figures,
# against the fast tests listed in setup.cfg. Not part of CI.
# Usage: bash mutation/run.sh [--fresh] [--max-children N] [PATTERN...]
#   --fresh          forget earlier results (mutmut otherwise re-tests only what changed)
#   --max-children   parallel workers (default 2: the two cores of the project's machines)
#   PATTERN...       only these mutant-name globs of the scope, e.g. "linpath.paths.lmc.*" (default: all of it)
set -euo pipefail
cd "$(dirname "$0")"
# mutmut names a mutant after its file's path from here; the tests import `linpath`, so `linpath` must be
# a folder here: links to the real package, tests and configs (scratch, not committed).
ln -sfn ../workflow/linpath linpath
ln -sfn ../tests tests
ln -sfn ../config config  # copied into mutants/ (also_copy): tests read the shipped configs
SCOPE=("linpath.paths.shapes.*" "linpath.paths.barrier.*" "linpath.report.tables.*" "linpath.foundations.hparams.xǁShapeThresholdsǁbarrier_threshold__*"
       "linpath.foundations.hparams.xǁShapeThresholdsǁrule__*" "linpath.engine.train.x_distances__*"
       "linpath.report.figures.x_shape_vs_accuracy__*" "linpath.report.figures.x_rank_correlations__*"
       "linpath.paths.lmc.*" "linpath.paths.planes.*" "linpath.study.spawn.*" "linpath.report.sensitivity.*")
CHILDREN=2
ONLY=()
while [ $# -gt 0 ]; do
    case "$1" in
        --fresh) rm -rf mutants ;;
        --max-children) CHILDREN="$2"; shift ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) ONLY+=("$1") ;;
    esac
    shift
done
[ ${#ONLY[@]} -eq 0 ] || SCOPE=("${ONLY[@]}")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one thread per worker: the workers are the parallelism
start=$(date +%s)
mutmut run --max-children "$CHILDREN" "${SCOPE[@]}" > mutants.log 2>&1 || { tail -n 40 mutants.log; exit 1; }
echo "mutmut run: $(( $(date +%s) - start )) s wall, $CHILDREN workers (log: mutation/mutants.log)"
python score.py "${SCOPE[@]}"
