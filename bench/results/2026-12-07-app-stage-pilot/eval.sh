#!/usr/bin/env bash
# The held-out app-layout figures of the shipped parts and both pilots, over the whole vocabulary (after
# 48414e6; the figures run.sh wrote before it scored through the training's restricted vocabulary).
# From the repository root: bash bench/results/2026-12-07-app-stage-pilot/eval.sh
set -euo pipefail
R=bench/results/2026-12-07-app-stage-pilot
for pair in shipped:lclm_core/default_parts/ratio-8 pilot2:runs/app8b/app/latest.pt pilot:runs/app8/app/latest.pt; do
  .venv/bin/python -m lclm_core.train.trainer eval --ckpt "${pair#*:}" --data "${DATA:-/work/data/shards}" --examples 0 \
    --qa-examples 0 --app-examples 96 --dtype float32 --out "$R/eval-app-${pair%%:*}.json"
done
