#!/usr/bin/env bash
# A scope longer than the context: the refrag run's 16k FAQ folder (15 questions) with three Debian manuals beside
# it. Latent N = 8 filling the context (partial_positions 0) against a block capped at 8,192 positions, and rag.
# Torch backend. The rule is in RULE.md, written first. From the repository root:
#   bash bench/results/2026-12-07-big-scope/run.sh
set -euo pipefail
R=bench/results/2026-12-07-big-scope
.venv/bin/python bench/assistant.py --lengths 16384 --questions 15 --backend torch \
  --beside /usr/share/doc/octave/octave.pdf /usr/share/R/doc/manual/R-intro.pdf /usr/share/R/doc/manual/R-lang.pdf \
  --configs latent:8 latent:8:partial8192 rag:8 --work /tmp/lcd-refrag --out $R/assistant
.venv/bin/python bench/assistant.py --paired $R/assistant.json:latent:8 $R/assistant.json:latent:8:partial8192 > $R/paired.md
.venv/bin/python bench/assistant.py --paired $R/assistant.json:rag:8 $R/assistant.json:latent:8:partial8192 >> $R/paired.md
.venv/bin/python bench/assistant.py --paired $R/assistant.json:rag:8 $R/assistant.json:latent:8 >> $R/paired.md
