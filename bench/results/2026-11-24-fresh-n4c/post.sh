#!/bin/bash
# After runs/fresh-n4b's 80-minute resume (N = 4, rank 8, fresh batches): never beside training (2 cores).
# Greedy on 128 held-out passages on both sides (the first 64 are the 64 of every earlier eval: the same
# seed draws them in order), QA and the assistant against this morning's runs on the shipped parts.
set -x
cd /work/main
while pgrep -f "trainer train" >/dev/null; do sleep 20; done
date
R=bench/results/2026-11-24-fresh-n4c
S=bench/results/2026-11-24-fresh-n4
RUN=runs/fresh-n4b/decoder/latest.pt
P=/work/res/parts4c
rm -rf $P /tmp/fresh4c-asst; mkdir -p $R $P /work/res/old4c
export LCLM_EVAL_DATA=/work/dl
restore() { git checkout -q lclm_core/default_parts && git clean -fdq lclm_core/default_parts; }
restore
T0=$(date +%s)
.venv/bin/python -m lclm_core.train.trainer eval --ckpt $RUN --data data/shards \
  --device cpu --dtype float32 --batch-size 8 --examples 128 --qa-examples 0 --out $R/eval-new.json > /work/res/evalc.log 2>&1
echo "eval took $(( $(date +%s) - T0 )) s"; date
.venv/bin/python bench/results/2026-11-24-dec16/old_ckpt.py lclm_core/default_parts/ratio-4 /work/res/old4c/latest.pt
T0=$(date +%s)
.venv/bin/python -m lclm_core.train.trainer eval --ckpt /work/res/old4c/latest.pt --data data/shards \
  --device cpu --dtype float32 --batch-size 8 --examples 128 --qa-examples 0 --out $R/eval-shipped.json > /work/res/evalc-old.log 2>&1
echo "eval shipped took $(( $(date +%s) - T0 )) s"; date
.venv/bin/python bench/paired_greedy.py $R/eval-shipped.json $R/eval-new.json > $R/greedy-paired.md
cat $R/greedy-paired.md
.venv/bin/python -m lclm_core.train.trainer export --ckpt $RUN --out $P/ratio-4 --figures $R/eval-new.json > /work/res/exportc.log 2>&1
T0=$(date +%s)
.venv/bin/python bench/eval_qa.py --ratio 4 --parts-dir $P --measures disfl_qa needle --n 40 --lengths 4096 \
  --depths 0 0.25 0.5 0.75 1 --trials 4 --threads 2 --dtype float32 --skip truncation snapkv snapkv-wide \
  --out $R/qa-new > /work/res/qac.log 2>&1
echo "qa took $(( $(date +%s) - T0 )) s"; date
.venv/bin/python -m lclm_core.train.trainer export --ckpt $RUN --out $P/ratio-4 \
  --figures $R/eval-new.json --qa-report $R/qa-new.json > /work/res/exportc2.log 2>&1
.venv/bin/python bench/results/2026-11-24-dec8/paired_qa.py $S/qa-new.json $R/qa-new.json > $R/qa-paired.md
cat $R/qa-paired.md
rm -rf lclm_core/default_parts/ratio-4 && cp -r $P/ratio-4 lclm_core/default_parts/ratio-4
T0=$(date +%s)
.venv/bin/python bench/assistant.py --lengths 4096 16384 --folders 4 1 --questions 100 --configs latent:4 \
  --work /tmp/fresh4c-asst --out $R/assistant100-new > /work/res/asstc.log 2>&1
echo "assistant took $(( $(date +%s) - T0 )) s"; date
restore
.venv/bin/python bench/assistant.py --paired $S/assistant100-new.json $R/assistant100-new.json > $R/assistant100-paired.md
cat $R/assistant100-paired.md
echo ALLDONE
