#!/usr/bin/env bash
# The first question over a folder, with and without the documents block read ahead (Assistant.warm, which the
# app's runtime calls whenever its indexer goes idle). The refrag run's FAQ folders and stores (the same --work),
# latent N = 8, torch backend (the app's defaults). From the repository root:
#   bash bench/results/2026-12-07-warm-start/run.sh
set -euo pipefail
R=bench/results/2026-12-07-warm-start
.venv/bin/python bench/assistant.py --lengths 4096 16384 32768 --folders 1 1 1 --questions 4 --backend torch \
  --configs latent:8 latent:8:warm --work /tmp/lcd-refrag --out $R/assistant
