"""Load on the embedded default: questions while a folder of many files is indexed, and peak memory.

Starts ``lclm-docs serve`` (default model, N=4, torch backend) on a fresh data
directory with one notes file, adds a folder of ``--files`` generated files
through the API, asks ``--questions`` questions while it is being indexed
(each timed), waits for the folder, then drops a burst of ``--burst`` more files
into it. Prints a table: indexing time and rate, answer times while indexing,
and the server's peak RSS (VmHWM) at each stage.

    python bench/load.py --files 1000 --burst 1000 --questions 5
    python bench/load.py --smoke      # 20 files, 1 question
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from data import wait_for  # noqa: E402
from served import peak_rss_mb, serve, write_notes  # noqa: E402

QUESTION = "What port does the Zorblax cluster run on?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--questions", type=int, default=5)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.files, args.burst, args.questions = 20, 10, 1
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        notes = root / "notes"
        notes.mkdir()
        (notes / "ops.txt").write_text("The Zorblax cluster runs on port 7431 and is administered by Mira Quell.\n")
        served = serve(root / "data", "--device", "cpu", folders=(notes,), timeout=900)
        try:
            client = Client(served.url, verbose=False)
            lib = lambda: client.predict(api_name="/library")  # noqa: E731
            wait_for(lambda: lib()["by_status"]["indexed"] == 1, timeout=300, what="notes indexed")
            rows = [("server started, notes indexed", None, peak_rss_mb(served.proc.pid))]

            big = root / "big"
            write_notes(big, args.files)
            t0 = time.perf_counter()
            client.predict(str(big), api_name="/add_folder")
            ask_s, while_indexing, right = [], 0, 0
            for _ in range(args.questions):
                t = time.perf_counter()
                final = list(client.submit(QUESTION, 0, api_name="/ask"))[-1]
                ask_s.append(time.perf_counter() - t)
                right += "7431" in final["text"]
                while_indexing += lib()["indexing"]
            wait_for(lambda: lib()["by_status"]["indexed"] == args.files + 1, timeout=7200, interval=2,
                     what="the folder indexed")
            index_s = time.perf_counter() - t0
            rows.append((f"{args.files} files indexed", index_s, peak_rss_mb(served.proc.pid)))

            t1 = time.perf_counter()
            write_notes(big / "burst", args.burst, start=args.files)
            wait_for(lambda: lib()["by_status"]["indexed"] == args.files + args.burst + 1, timeout=7200,
                     interval=2, what="the burst indexed")
            burst_s = time.perf_counter() - t1
            rows.append((f"burst of {args.burst} files indexed", burst_s, peak_rss_mb(served.proc.pid)))
            errors = lib()["by_status"]["error"]
        finally:
            code = served.stop()

    print(f"\nLoad on the embedded default (N=4, torch backend), this machine; server exit status {code}\n")
    print("| stage | seconds | files/s | server peak RSS (MB) |")
    print("|---|---|---|---|")
    for (name, secs, rss), n in zip(rows, [None, args.files, args.burst]):
        rate = f"{n / secs:.1f}" if secs and n else "-"
        print(f"| {name} | {secs:.0f} | {rate} | {rss:.0f} |" if secs else f"| {name} | - | - | {rss:.0f} |")
    print(f"\n{len(ask_s)} questions while the folder was indexed ({while_indexing} of them answered before it "
          f"was done): median {statistics.median(ask_s):.1f} s (min {min(ask_s):.1f}, max {max(ask_s):.1f}); "
          f"{right} of {len(ask_s)} answers name the port 7431. Documents in error: {errors}.")


if __name__ == "__main__":
    main()
