"""Where latent mode's first-token time goes: each step of Assistant.stream timed on warm questions.

From the repository root, after run.sh has built /tmp/lcd-refrag (or the refrag run did):
    .venv/bin/python bench/results/2026-12-07-compact-head/stages.py [LENGTH]
Prints each question's timings and the medians over the warm ones (the first question prefills the documents).
"""
import functools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from app.assistant import Assistant, AssistantConfig  # noqa: E402
from app.services import open_assistant, open_store  # noqa: E402
from app.settings import Settings  # noqa: E402

length = sys.argv[1] if len(sys.argv) > 1 else "16384"
spent: dict[str, list[float]] = {}


def timed(cls, name):
    f = getattr(cls, name)

    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent.setdefault(name, []).append(time.perf_counter() - t)
    setattr(cls, name, g)


for n in ["_bm25", "_closeness", "_fit", "_prefill_docs", "_attention", "_rank", "_choose", "_relevant", "_documents_block"]:
    timed(Assistant, n)
settings = Settings(data_dir=Path(f"/tmp/lcd-refrag/data-{length}-n8"), device="cpu")
qs = json.loads(Path(f"/tmp/lcd-refrag/questions-{length}.json").read_text())[:7]
with open_store(settings) as store, open_assistant(settings, store, ratio=8, backend="torch",
                                                   config=AssistantConfig(mode="latent", max_new_tokens=24)) as a:
    rows = []
    for q in qs:
        spent.clear()
        ans = a.ask(q["question"])
        rows.append({**ans.timings, **{k: sum(v) for k, v in spent.items()}, "positions": ans.positions})
for r in rows:
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})
print("median over the warm questions:", {k: round(statistics.median(r.get(k, 0) for r in rows[1:]), 3) for k in rows[1]})
