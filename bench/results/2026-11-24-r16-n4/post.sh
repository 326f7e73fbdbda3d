#!/bin/bash
# Post-training chain for runs/r16-n4 (N = 4, decoder LoRA grown to rank 16): never beside training (2 cores).
# Its assistant step reused two --work folders of an earlier night whose stores held other parts' latents
# (README, step 3): that step was re-run with post_assistant.sh. It was stopped after NEWDONE.
set -x
cd /work/main
while pgrep -f "trainer train" >/dev/null; do sleep 20; done
date
R=bench/results/2026-11-24-r16-n4
RUN=runs/r16-n4/decoder/latest.pt
mkdir -p $R /work/res/parts4 /work/res/old4
export LCLM_EVAL_DATA=/work/dl
restore() { git checkout -q lclm_core/default_parts && git clean -fdq lclm_core/default_parts; }
qa() {  # $1 = new|old, $2 = extra args
  T0=$(date +%s)
  .venv/bin/python bench/eval_qa.py --ratio 4 $2 --measures disfl_qa needle --n 40 --lengths 4096 \
    --depths 0 0.25 0.5 0.75 1 --trials 4 --threads 2 --dtype float32 --skip truncation snapkv snapkv-wide \
    --out $R/qa-$1 > /work/res/qa4-$1.log 2>&1
  echo "qa $1 took $(( $(date +%s) - T0 )) s"; date
}
ev() {  # $1 = new|old, $2 = checkpoint
  T0=$(date +%s)
  .venv/bin/python -m lclm_core.train.trainer eval --ckpt $2 --data data/shards \
    --device cpu --dtype float32 --batch-size 8 --examples 64 --qa-examples 0 --out $R/eval-$1.json > /work/res/eval4-$1.log 2>&1
  echo "eval $1 took $(( $(date +%s) - T0 )) s"; date
}
asst() {  # $1 = name, $2 = work dir
  T0=$(date +%s)
  .venv/bin/python bench/assistant.py --lengths 4096 16384 --folders 4 1 --questions 100 --configs latent:4 --work $2 \
    --out $R/assistant100-$1 > /work/res/asst4-$1.log 2>&1
  echo "assistant $1 took $(( $(date +%s) - T0 )) s"; date
}
.venv/bin/python bench/results/2026-11-24-dec16/old_ckpt.py lclm_core/default_parts/ratio-4 /work/res/old4/latest.pt
ev new $RUN
.venv/bin/python -m lclm_core.train.trainer export --ckpt $RUN --out /work/res/parts4/ratio-4 --figures $R/eval-new.json > /work/res/export4.log 2>&1
qa new "--parts-dir /work/res/parts4"
.venv/bin/python -m lclm_core.train.trainer export --ckpt $RUN --out /work/res/parts4/ratio-4 \
  --figures $R/eval-new.json --qa-report $R/qa-new.json > /work/res/export4b.log 2>&1
restore
asst shipped /tmp/asst4old
rm -rf lclm_core/default_parts/ratio-4 && cp -r /work/res/parts4/ratio-4 lclm_core/default_parts/ratio-4
asst r16 /tmp/asst4new
restore
.venv/bin/python bench/assistant.py --paired $R/assistant100-shipped.json $R/assistant100-r16.json > $R/assistant100-paired.md
cat $R/assistant100-paired.md
echo NEWDONE
ev old /work/res/old4/latest.pt
qa old ""
.venv/bin/python bench/results/2026-11-24-dec8/paired_qa.py $R/qa-old.json $R/qa-new.json > $R/qa-paired.md
cat $R/qa-paired.md
echo ALLDONE
