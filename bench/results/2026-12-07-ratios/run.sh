#!/usr/bin/env bash
# N = 4 and N = 16 on the 60 FAQ questions of bench/results/2026-12-07-compact-head (the same --work, so the
# same folders and questions; each ratio indexes its own store): latent mode, latents alone, and rag through
# that ratio's decoder LoRA. Torch backend, as the app's default. N = 8 is the compact-head run.
# From the repository root: bash bench/results/2026-12-07-ratios/run.sh
set -euo pipefail
R=bench/results/2026-12-07-ratios
.venv/bin/python bench/assistant.py --lengths 4096 16384 32768 --folders 2 1 1 --questions 15 --backend torch \
  --configs latent:4 latent:4:x0 rag:4 latent:16 latent:16:x0 rag:16 --work /tmp/lcd-refrag --out $R/assistant
for n in 4 16; do
  for c in latent:$n latent:$n:x0; do
    .venv/bin/python bench/assistant.py --paired $R/assistant.json:rag:$n $R/assistant.json:$c
  done
  .venv/bin/python bench/assistant.py --paired bench/results/2026-12-07-compact-head/assistant.json:latent:8 \
    $R/assistant.json:latent:$n
done > $R/paired.md
