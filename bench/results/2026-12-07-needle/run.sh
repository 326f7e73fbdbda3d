#!/usr/bin/env bash
# The needle at 4k tokens on the shipped parts, N = 4, 8 and 16: raw text, latents alone, latents with expansion,
# and no context, 6 haystacks each (3 depths x 2 trials), cut as the app cuts. Issue 30 asks for the needle with
# latents only. From the repository root: bash bench/results/2026-12-07-needle/run.sh
set -euo pipefail
R=bench/results/2026-12-07-needle
for n in 4 8 16; do
  .venv/bin/python bench/eval_qa.py --ratio $n --measures needle --lengths 4096 --depths 0 0.5 1 --trials 2 \
    --skip latents+quotes rag truncation snapkv snapkv-wide --threads 2 --dtype float32 --out $R/needle-n$n
done
