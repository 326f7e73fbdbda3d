#!/bin/sh
# Ray indexing (1, 2, 4 encoder actors) beside the local indexer, embedded default at N=8, 3 rounds; shard sizes.
cd "$(dirname "$0")/../../.." && .venv/bin/python bench/ray_index.py --ratio 8 --pages 60 --topics 30 --repeat 3 --out bench/results/2026-12-07-ray-index/ray_index
