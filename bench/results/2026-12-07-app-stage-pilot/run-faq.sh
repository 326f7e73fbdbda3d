#!/usr/bin/env bash
# The pilot's parts in the app, on the FAQ folders and questions of bench/results/2026-12-07-refrag/ (the
# shipped parts' side of the pairing): a clone of this repository with the pilot exported as its ratio-8 parts,
# so the repository's own parts stay as shipped. From the repository root, after run.sh and eval.sh:
#   CKPT=runs/app8b/app/latest.pt TAG=pilot2 bash bench/results/2026-12-07-app-stage-pilot/run-faq.sh
set -euo pipefail
R=$PWD/bench/results/2026-12-07-app-stage-pilot
PY=$PWD/.venv/bin/python
CLONE=/tmp/lcd-pilot-clone
rm -rf $CLONE && git clone -q . $CLONE
$PY -m lclm_core.train.trainer export --ckpt ${CKPT:-runs/app8b/app/latest.pt} --out $CLONE/lclm_core/default_parts/ratio-8 \
  --description "CPU pilot of the app-layout stage (bench/results/2026-12-07-app-stage-pilot)"
cd $CLONE
$PY bench/assistant.py --lengths 4096 16384 32768 --folders 2 1 1 --questions 15 --backend torch \
  --configs latent:8 latent:8:x0 rag:8 --work /tmp/lcd-pilot --out $R/assistant-${TAG:-pilot2}
# paired by question against the shipped parts at the same commit (bench/results/2026-12-07-compact-head)
cd - > /dev/null
for c in latent:8 latent:8:x0 rag:8; do
  $PY bench/assistant.py --paired bench/results/2026-12-07-compact-head/assistant.json:$c $R/assistant-${TAG:-pilot2}.json:$c
done > $R/paired-${TAG:-pilot2}.md
