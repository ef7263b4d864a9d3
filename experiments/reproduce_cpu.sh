#!/usr/bin/env bash
# The CPU-scale reproduction of docs/reproduction.md: every method on the ShuffleNet space under
# the one cpu budget, the consistency experiment for SPOS and DSNAS (20 architectures each, the
# same 20), then the report. About 2 hours on a 2-core machine; run it from the repository root
# after `bash experiments/setup.sh`.
#
#   bash experiments/reproduce_cpu.sh [output folder, default outputs/reproduction]
set -euo pipefail
OUT=${1:-outputs/reproduction}
PY=${PYTHON:-.venv/bin/python}

# 1. all eight methods, one budget (budget=cpu), one seed: search + finetune or retrain
$PY experiments/run.py -m method=dsnas,spos,proxyless,snas,gdas,darts,reinforce,random space=shufflenet \
    hydra.sweep.dir="$OUT/sweep_shufflenet"

# 2. search-stage vs retrain accuracy. Each architecture is retrained for 2 epochs (the budget's
#    6 would take 80 minutes per 20 architectures here); DSNAS reuses SPOS's retrains.
$PY experiments/consistency.py method=spos space=shufflenet n_archs=20 budget.retrain_epochs=2 \
    hydra.run.dir="$OUT/consistency/spos"
$PY experiments/consistency.py method=dsnas space=shufflenet n_archs=20 budget.retrain_epochs=2 \
    retrain_from="$OUT/consistency/spos" hydra.run.dir="$OUT/consistency/dsnas"

# 3. the tables and figures
$PY analysis/report.py "$OUT" --out "$OUT/report"
