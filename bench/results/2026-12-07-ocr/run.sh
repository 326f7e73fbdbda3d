#!/bin/sh
# OCR word accuracy and speed: R-intro.pdf pages 10-29 scanned at 200 dpi (image-only PDF), read back by the app.
cd "$(dirname "$0")/../../.." && .venv/bin/python bench/ocr.py --first 10 --pages 20 --out bench/results/2026-12-07-ocr/ocr
