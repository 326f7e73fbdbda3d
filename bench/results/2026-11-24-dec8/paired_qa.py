"""disfl_qa, paired by item: F1 change per condition between two bench/eval_qa.py reports (answerable items).

    python bench/results/2026-11-24-dec8/paired_qa.py qa-old.json qa-new.json
Columns: condition | mean F1 change (points) | its paired SE | items whose F1 changed | items.
"""
import json, statistics as st, sys
def load(p):
    q = json.load(open(p))
    return {(r["condition"], r["index"]): r for r in q["records"] if r["measure"] == "disfl_qa" and r["answerable"]}
a, b = load(sys.argv[1]), load(sys.argv[2])
for c in ["raw", "latents", "latents+expansion", "latents+quotes", "none"]:
    keys = sorted(k for k in a if k[0] == c and k in b)
    d = [100 * (b[k]["f1"] - a[k]["f1"]) for k in keys]
    print(f"| {c} | {st.mean(d):+.1f} | {st.stdev(d)/len(d)**0.5:.1f} | {sum(x != 0 for x in d)} | n={len(d)}")
