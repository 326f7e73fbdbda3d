#!/usr/bin/env bash
# The same 60 FAQ questions as bench/results/2026-12-07-refrag/ (the same --work, so the same folders, questions
# and stores), after the output head reads a compact row (lclm_core/torch_backend.last_position): latent N = 8
# (the app's default), latents alone, and rag, side by side. Torch backend, as the app's default.
# From the repository root: bash bench/results/2026-12-07-compact-head/run.sh
set -euo pipefail
R=bench/results/2026-12-07-compact-head
.venv/bin/python bench/assistant.py --lengths 4096 16384 32768 --folders 2 1 1 --questions 15 --backend torch \
  --configs latent:8 latent:8:x0 rag:8 --work /tmp/lcd-refrag --out $R/assistant
for c in latent:8 latent:8:x0 rag:8; do
  .venv/bin/python bench/assistant.py --paired bench/results/2026-12-07-refrag/assistant.json:$c $R/assistant.json:$c
done > $R/paired-with-refrag.md
