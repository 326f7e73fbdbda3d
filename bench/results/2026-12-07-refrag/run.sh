#!/usr/bin/env bash
# Retrieve many, compress all, expand few (REFRAG's layout) against the whole scope as latents, with the
# baselines in the same run: latent N = 8 (the app's default), the same with only the 16 best-ranked segments
# as latents, both without expansion (latents alone), and rag. Torch backend, as the app's default.
# From the repository root: bash bench/results/2026-12-07-refrag/run.sh
set -euo pipefail
R=bench/results/2026-12-07-refrag
.venv/bin/python bench/assistant.py --lengths 4096 16384 32768 --folders 2 1 1 --questions 15 --backend torch \
  --configs latent:8 latent:8:top16 latent:8:x0 latent:8:top16:x0 rag:8 --work /tmp/lcd-refrag --out $R/assistant
