#!/bin/bash
# Post-training chain for runs/fresh-n4 (N = 4, rank 8, the first decoder-stage run on fresh batches):
# never beside training (2 cores). The shipped side of each measure is an earlier run of the same command on
# the same parts: QA in ../2026-11-24-qa-share/, eval re-run at the end (per-passage scores), the assistant in ../2026-11-24-r16-n4/ (fresh --work,
# and it reproduced qa-share's answers exactly).
set -x
cd /work/main
while pgrep -f "trainer train" >/dev/null; do sleep 20; done
date
R=bench/results/2026-11-24-fresh-n4
RUN=runs/fresh-n4/decoder/latest.pt
P=/work/res/parts4f
rm -rf $P /tmp/fresh4-asst; mkdir -p $R $P
export LCLM_EVAL_DATA=/work/dl
restore() { git checkout -q lclm_core/default_parts && git clean -fdq lclm_core/default_parts; }
T0=$(date +%s)
.venv/bin/python -m lclm_core.train.trainer eval --ckpt $RUN --data data/shards \
  --device cpu --dtype float32 --batch-size 8 --examples 64 --qa-examples 0 --out $R/eval-new.json > /work/res/evalf.log 2>&1
echo "eval took $(( $(date +%s) - T0 )) s"; date
.venv/bin/python -m lclm_core.train.trainer export --ckpt $RUN --out $P/ratio-4 --figures $R/eval-new.json > /work/res/exportf.log 2>&1
T0=$(date +%s)
.venv/bin/python bench/eval_qa.py --ratio 4 --parts-dir $P --measures disfl_qa needle --n 40 --lengths 4096 \
  --depths 0 0.25 0.5 0.75 1 --trials 4 --threads 2 --dtype float32 --skip truncation snapkv snapkv-wide \
  --out $R/qa-new > /work/res/qaf.log 2>&1
echo "qa took $(( $(date +%s) - T0 )) s"; date
.venv/bin/python -m lclm_core.train.trainer export --ckpt $RUN --out $P/ratio-4 \
  --figures $R/eval-new.json --qa-report $R/qa-new.json > /work/res/exportf2.log 2>&1
.venv/bin/python bench/results/2026-11-24-dec8/paired_qa.py bench/results/2026-11-24-qa-share/qa-qa4-n4.json $R/qa-new.json > $R/qa-paired.md
cat $R/qa-paired.md
restore
rm -rf lclm_core/default_parts/ratio-4 && cp -r $P/ratio-4 lclm_core/default_parts/ratio-4
T0=$(date +%s)
.venv/bin/python bench/assistant.py --lengths 4096 16384 --folders 4 1 --questions 100 --configs latent:4 \
  --work /tmp/fresh4-asst --out $R/assistant100-new > /work/res/asstf.log 2>&1
echo "assistant took $(( $(date +%s) - T0 )) s"; date
restore
.venv/bin/python bench/assistant.py --paired bench/results/2026-11-24-r16-n4/assistant100-shipped.json \
  $R/assistant100-new.json > $R/assistant100-paired.md
cat $R/assistant100-paired.md
# The shipped parts' eval again, now that it keeps each passage's greedy score: the greedy change gets a
# paired SE (bench/paired_greedy.py), and the run checks that qa-share's 24.6% reproduces.
mkdir -p /work/res/old4f
.venv/bin/python bench/results/2026-11-24-dec16/old_ckpt.py lclm_core/default_parts/ratio-4 /work/res/old4f/latest.pt
T0=$(date +%s)
.venv/bin/python -m lclm_core.train.trainer eval --ckpt /work/res/old4f/latest.pt --data data/shards \
  --device cpu --dtype float32 --batch-size 8 --examples 64 --qa-examples 0 --out $R/eval-shipped.json > /work/res/evalf-old.log 2>&1
echo "eval shipped took $(( $(date +%s) - T0 )) s"; date
.venv/bin/python bench/paired_greedy.py $R/eval-shipped.json $R/eval-new.json > $R/greedy-paired.md
cat $R/greedy-paired.md
echo ALLDONE
