#!/usr/bin/env bash
# The FAQ baselines of 2026-12-07: one bench/eval_qa.py run per ratio (raw, latents, latents+expansion,
# latents+quotes, rag, none on the same 60 questions), then the app itself (bench/assistant.py) on folders
# of FAQ answers, every mode on the same questions. From the repository root: bash bench/results/2026-12-07-faq-baselines/run.sh
set -euo pipefail
R=bench/results/2026-12-07-faq-baselines
for n in 4 8 16; do
  .venv/bin/python bench/eval_qa.py --ratio $n --measures faq --n 60 --threads 1 --dtype float32 --out $R/qa-n$n
done
.venv/bin/python bench/assistant.py --lengths 4096 16384 --folders 2 1 --questions 15 \
  --configs latent:4 latent:8 latent:16 rag:8 full:8 --work /tmp/lcd-faq-assistant --out $R/assistant
