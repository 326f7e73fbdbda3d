#!/bin/bash
# The assistant side by side again, in fresh --work folders (post.sh reused two of an earlier night's, whose
# stores held other parts' latents: see README). Runs from the repository root.
set -x
cd /work/main
R=bench/results/2026-11-24-r16-n4
restore() { git checkout -q lclm_core/default_parts && git clean -fdq lclm_core/default_parts; }
asst() {  # $1 = name, $2 = work dir
  T0=$(date +%s)
  .venv/bin/python bench/assistant.py --lengths 4096 16384 --folders 4 1 --questions 100 --configs latent:4 --work $2 \
    --out $R/assistant100-$1 > /work/res/asst4-$1.log 2>&1
  echo "assistant $1 took $(( $(date +%s) - T0 )) s"; date
}
restore
asst shipped /tmp/r16a-old
rm -rf lclm_core/default_parts/ratio-4 && cp -r /work/res/parts4/ratio-4 lclm_core/default_parts/ratio-4
asst r16 /tmp/r16a-new
restore
.venv/bin/python bench/assistant.py --paired $R/assistant100-shipped.json $R/assistant100-r16.json > $R/assistant100-paired.md
cat $R/assistant100-paired.md
echo DONE
