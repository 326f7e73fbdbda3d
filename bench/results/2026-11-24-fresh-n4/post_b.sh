#!/bin/bash
# After the 22-minute continuation (runs/fresh-n4b, resumed from a copy of runs/fresh-n4): the greedy
# trend only, paired with the shipped parts' eval. Never beside training (2 cores).
set -x
cd /work/main
while pgrep -f "trainer train" >/dev/null; do sleep 15; done
date
R=bench/results/2026-11-24-fresh-n4
T0=$(date +%s)
.venv/bin/python -m lclm_core.train.trainer eval --ckpt runs/fresh-n4b/decoder/latest.pt --data data/shards \
  --device cpu --dtype float32 --batch-size 8 --examples 64 --qa-examples 0 --out $R/eval-continued.json > /work/res/evalb.log 2>&1
echo "eval took $(( $(date +%s) - T0 )) s"; date
.venv/bin/python bench/paired_greedy.py $R/eval-new.json $R/eval-continued.json > $R/greedy-paired-continued.md
cat $R/greedy-paired-continued.md
echo ALLDONE
