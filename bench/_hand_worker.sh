#!/bin/bash
# One task of bench/training.py's baseline: TF_CONFIG written by hand from Slurm's variables, as a user
# without hpc-tf would (host order from scontrol, one port per job), then the timed quickstart model.
#   srun _hand_worker.sh OUT EPOCHS [KERAS_FIX_RUNTIME_DIR]
set -euo pipefail
port=$((20000 + SLURM_JOB_ID % 10000))
workers=""
for host in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do
  workers="$workers\"$host:$port\","
done
export TF_CONFIG="{\"cluster\": {\"worker\": [${workers%,}]}, \"task\": {\"type\": \"worker\", \"index\": $SLURM_PROCID}}"
exec python3 _train_timed.py --out "$1" --epochs "$2" ${3:+--keras-fix "$3"}
