#!/bin/bash
# Post-training chain for runs/dec16: never beside training (2 cores).
set -x
cd /work/main
while pgrep -f "trainer train" >/dev/null; do sleep 20; done
date
R=bench/results/2026-11-24-dec16
mkdir -p $R /work/res/parts16 /work/res/old16
export LCLM_EVAL_DATA=/work/dl
git stash list >/dev/null
.venv/bin/python $R/old_ckpt.py lclm_core/default_parts/ratio-16 /work/res/old16/latest.pt
for w in new old; do
  if [ $w = new ]; then CK=runs/dec16/decoder/latest.pt; else CK=/work/res/old16/latest.pt; fi
  T0=$(date +%s)
  .venv/bin/python -m lclm_core.train.trainer eval --ckpt $CK --data data/shards \
    --device cpu --dtype float32 --batch-size 8 --examples 64 --qa-examples 0 --out $R/eval-$w.json > /work/res/eval16-$w.log 2>&1
  echo "eval $w took $(( $(date +%s) - T0 )) s"; date
done
.venv/bin/python -m lclm_core.train.trainer export --ckpt runs/dec16/decoder/latest.pt --out /work/res/parts16/ratio-16 \
  --figures $R/eval-new.json > /work/res/export16.log 2>&1
for w in new old; do
  if [ $w = new ]; then PD="--parts-dir /work/res/parts16"; else PD=""; fi
  T0=$(date +%s)
  .venv/bin/python bench/eval_qa.py --ratio 16 $PD --measures disfl_qa needle --n 40 --lengths 4096 \
    --depths 0 0.25 0.5 0.75 1 --trials 4 --threads 2 --dtype float32 --skip truncation snapkv snapkv-wide \
    --out $R/qa-$w > /work/res/qa16-$w.log 2>&1
  echo "qa $w took $(( $(date +%s) - T0 )) s"; date
done
.venv/bin/python -m lclm_core.train.trainer export --ckpt runs/dec16/decoder/latest.pt --out /work/res/parts16/ratio-16 \
  --figures $R/eval-new.json --qa-report $R/qa-new.json > /work/res/export16b.log 2>&1
git checkout lclm_core/default_parts
T0=$(date +%s)
.venv/bin/python bench/assistant.py --lengths 4096 16384 --folders 4 1 --questions 100 --configs latent:16 --work /tmp/asst16old \
  --out $R/assistant100-shipped > /work/res/asst16old.log 2>&1
echo "shipped took $(( $(date +%s) - T0 )) s"; date
rm -rf lclm_core/default_parts/ratio-16 && cp -r /work/res/parts16/ratio-16 lclm_core/default_parts/ratio-16
T0=$(date +%s)
.venv/bin/python bench/assistant.py --lengths 4096 16384 --folders 4 1 --questions 100 --configs latent:16 --work /tmp/asst16new \
  --out $R/assistant100-dec16 > /work/res/asst16new.log 2>&1
echo "new took $(( $(date +%s) - T0 )) s"; date
git checkout lclm_core/default_parts
.venv/bin/python bench/assistant.py --paired $R/assistant100-shipped.json $R/assistant100-dec16.json > $R/assistant100-paired.md
cat $R/assistant100-paired.md
echo DONE16
# The app's default ratio: latent:4 and latent:8 side by side on the same folders (shipped parts: restored above)
T0=$(date +%s)
.venv/bin/python bench/assistant.py --lengths 4096 16384 --folders 4 1 --questions 100 --configs latent:4 latent:8 --work /tmp/asst48 \
  --out $R/assistant100-ratios > /work/res/asst48.log 2>&1
echo "ratios took $(( $(date +%s) - T0 )) s"; date
.venv/bin/python bench/assistant.py --paired $R/assistant100-ratios.json:latent:4 $R/assistant100-ratios.json:latent:8 > $R/assistant100-ratios-paired.md
cat $R/assistant100-ratios-paired.md
echo ALLDONE
