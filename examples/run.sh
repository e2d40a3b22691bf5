#!/usr/bin/env bash
# The worked example of README "Bring your own model, data and loss": your own network and data (own_model.py),
# a sweep of four LR policies over them (conf/experiment/own_digits.yaml), then the report.
#   bash examples/run.sh                          # the sweep and the report (about a minute on 2 cores)
#   bash examples/run.sh trainer.max_steps=20     # extra overrides go to the sweep
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
OUT=${OUT:-../reports/own-digits}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # own_model.py must be importable by every job
"$PY" -m pipeline --config-dir conf +experiment=own_digits "$@" multirun
"$PY" -m pipeline.report experiments=[own-digits] target=0.9 baseline=fix out_dir="$OUT"
