"""OCR word accuracy and speed: pages of R-intro.pdf rendered to images, wrapped as an image-only PDF, read
back by the app's OCR path (app.ingest -> app.ocr: pypdfium2 at 300 dpi, Tesseract), against each page's
own text layer.

Word accuracy is 1 - (word edit distance / words in the text layer), both sides cleaned by the app's
clean_text and split on whitespace: the share of the page's words a reader of the OCR text gets right.
Pages per minute counts the OCR path alone (render + Tesseract), not the rendering of the scan.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import ocr  # noqa: E402
from app.ingest import IngestLimits, clean_text, parse_document  # noqa: E402
from bench.report_files import write_report  # noqa: E402

R_INTRO = Path("/usr/share/R/doc/manual/R-intro.pdf")  # Debian's r-doc-pdf


def word_errors(truth: list[str], got: list[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    prev = list(range(len(got) + 1))
    for i, t in enumerate(truth, 1):
        cur = [i] + [0] * len(got)
        for j, g in enumerate(got, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (t != g))
        prev = cur
    return prev[-1]


def scanned(src: Path, pages: list[int], dpi: int, dest: Path) -> None:
    """An image-only PDF of the given 1-based pages, as a scanner at ``dpi`` would make it."""
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(src))
    images = [pdf[p - 1].render(scale=dpi / 72, grayscale=True).to_pil().copy() for p in pages]
    pdf.close()
    images[0].save(dest, "PDF", resolution=dpi, save_all=True, append_images=images[1:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pdf", type=Path, default=R_INTRO)
    p.add_argument("--first", type=int, default=10, help="first page (1-based)")
    p.add_argument("--pages", type=int, default=20)
    p.add_argument("--scan-dpi", type=int, default=200, help="resolution of the simulated scan")
    p.add_argument("--lang", default="eng")
    p.add_argument("--out", type=Path, required=True, help="report path without suffix (.md and .json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    why = ocr.unavailable(args.lang)
    if why:
        print(f"ocr: {why}", file=sys.stderr)
        return 2
    import pypdf

    numbers = list(range(args.first, args.first + args.pages))
    reader = pypdf.PdfReader(args.pdf)
    truth = {n: clean_text(reader.pages[n - 1].extract_text() or "") for n in numbers}
    with tempfile.TemporaryDirectory() as tmp:
        scan = Path(tmp) / "scan.pdf"
        scanned(args.pdf, numbers, args.scan_dpi, scan)
        seconds: list[float] = []
        original = ocr.PdfOcr.page

        def timed(self, index):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            try:
                return original(self, index)
            finally:
                seconds.append(time.perf_counter() - t)

        ocr.PdfOcr.page = timed  # type: ignore[method-assign]
        t0 = time.perf_counter()
        doc = parse_document(scan, lambda s: len(s.split()), limits=IngestLimits(ocr_languages=args.lang))
        wall = time.perf_counter() - t0
        ocr.PdfOcr.page = original  # type: ignore[method-assign]
    got: dict[int, str] = {}
    for s in doc.segments:
        got[s.page] = got.get(s.page, "") + " " + s.text
    rows, total_err, total_words = [], 0, 0
    for k, n in enumerate(numbers, 1):
        t_words, g_words = truth[n].split(), got.get(k, "").split()
        err = word_errors(t_words, g_words)
        total_err += err
        total_words += len(t_words)
        rows.append({"page": n, "words": len(t_words), "ocr_words": len(g_words), "word_errors": err,
                     "accuracy": 1 - err / max(len(t_words), 1), "ocr_s": seconds[k - 1] if k <= len(seconds) else None})
    med = statistics.median(seconds)
    cpus = os.cpu_count()
    head = (f"ocr: {args.pdf.name} pages {numbers[0]}-{numbers[-1]} scanned at {args.scan_dpi} dpi, read at "
            f"{ocr.DPI} dpi by Tesseract {ocr.version()} ({args.lang}), {platform.machine()}, {cpus} CPUs, "
            f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    lines = [head, "", "| page | words (text layer) | words (OCR) | word errors | word accuracy | OCR s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['page']} | {r['words']} | {r['ocr_words']} | {r['word_errors']} | {r['accuracy']:.1%} | "
                     f"{r['ocr_s']:.1f} |")
    accuracy = 1 - total_err / max(total_words, 1)
    lines += ["", f"Word accuracy over {len(numbers)} pages: **{accuracy:.1%}** ({total_err} errors in {total_words} "
              f"words); median page accuracy {statistics.median(r['accuracy'] for r in rows):.1%}.",
              f"Speed: median {med:.1f} s a page = **{60 / med:.1f} pages per minute**; the whole document "
              f"{wall:.0f} s ({60 * len(numbers) / wall:.1f} pages per minute, parsing and segmenting included)."]
    md = "\n".join(lines)
    print(md)
    write_report(args.out, md, {"pdf": str(args.pdf), "pages": rows, "word_accuracy": accuracy,
                                "median_s_per_page": med, "pages_per_minute": 60 / med, "wall_s": wall,
                                "tesseract": ocr.version(), "scan_dpi": args.scan_dpi, "ocr_dpi": ocr.DPI,
                                "cpus": cpus})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
