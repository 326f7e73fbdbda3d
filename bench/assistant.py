"""The assistant's modes side by side on folders no one here wrote: FAQ answers, and the questions they answer.

For each folder length L (tokens of FAQ answers from bench/qa_data.py, one
.txt file per answer, the questions themselves never written to the folder)
the folder is indexed once per compression ratio, then every configuration
answers the same questions (their answer is in the folder) through
``Assistant.ask``:

  latent N=4/8/16   compressed documents + the top passages put back raw (the product)
  full              the folder's raw text (n/a where it does not fit the 32k context)
  rag               bm25 top-k raw passages, no documents block

Each configuration runs in its own process (so its peak RSS is its own) on
the llama.cpp backend. Time to first token is reported twice: "cold" for the
first question (the documents block is prefilled: no prefix cache) and
"warm" for the median of the others (the cached documents prefix is reused).
Accuracy: token F1 against the answer's first paragraph (and exact match),
SQuAD-normalised. Until 2026-12 the folders were BIG-bench disfl_qa paragraphs;
those reports in bench/results/ say so.

    python bench/assistant.py --lengths 4096 16384 --questions 10 --out bench/results/assistant
    python bench/assistant.py --smoke          # one tiny folder, two questions: seconds (CI runs it)
    python bench/assistant.py --paired before.json after.json   # two runs, question by question
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report_files import write_report  # noqa: E402
from bench.eval_qa import best_over, exact_match, token_f1  # noqa: E402
from bench.qa_data import DEFAULT_SOURCES, SOURCES, FAQItem, items_digest, load_items  # noqa: E402

log = logging.getLogger("bench.assistant")
CONFIGS = ["latent:4", "latent:8", "latent:16", "latent:8:inplace", "full:8", "rag:8"]
KV_BYTES_PER_POSITION = 18 * 2 * 256 * 2  # Gemma-3-270M: 18 layers x (K, V) x 1 KV head x 256 dims x f16


def _proc_status(field: str) -> float:
    """A VmXXX field of /proc/self/status in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so the peak read later is the answering's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def build_folder(items: list[FAQItem], length: int, folder: Path, tokenizer, n_questions: int, seed: int = 0,
                 taken: set[str] | None = None) -> list[dict]:
    """Write FAQ answers until the folder holds ``length`` tokens; return the questions they answer.

    ``taken``: answers already in other folders of the same length, skipped here and
    added to, so several folders give disjoint questions.
    """
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    folder.mkdir(parents=True, exist_ok=True)
    taken = set() if taken is None else taken
    total, questions = 0, []
    for i in order:
        it = items[i]
        if it.id in taken:  # another folder's answer
            continue
        n = len(tokenizer(it.answer, add_special_tokens=False)["input_ids"])
        if total + n > length:
            continue  # too long for what is left: a shorter answer may fit
        name = f"answer-{len(questions):03d}.txt"
        (folder / name).write_text(it.answer + "\n")
        taken.add(it.id)
        total += n
        questions.append({"question": it.question, "targets": it.targets, "file": name, "id": it.id})
    rng.shuffle(questions)
    return questions[:n_questions]


def run_one(args: argparse.Namespace) -> dict:
    """One configuration in this process: index (if needed), ask every question, report."""
    from app.assistant import AssistantConfig
    from app.cli import main as cli
    from app.quality import is_listing
    from app.services import open_assistant, open_store
    from app.settings import Settings

    spec = json.loads(args.one)
    settings = Settings(data_dir=Path(spec["data"]), device="cpu")
    # Always: indexing is incremental, and a store kept from an earlier run (the same --work) holds latents
    # of whatever parts were in place then. Those no longer match the compressor, so the app shows their
    # segments as raw text, and the run would measure that instead of the latents.
    assert cli(["--data-dir", spec["data"], "--device", "cpu", "index", "--ratio", str(spec["ratio"]), spec["folder"]]) == 0
    questions = json.loads(Path(spec["questions"]).read_text())
    rows = []
    cfg = AssistantConfig(mode=spec["mode"], max_new_tokens=24, **config_options(spec.get("style", "append")))
    with open_store(settings) as store, open_assistant(settings, store, ratio=spec["ratio"], backend=spec["backend"],
                                                       config=cfg) as assistant:
        loaded = _proc_status("VmRSS")
        _reset_peak_rss()
        if "warm" in spec.get("style", "").split(":"):
            t = time.perf_counter()
            spec = {**spec, "warmed": assistant.warm(), "warm_s": time.perf_counter() - t}
        for q in questions:
            t = time.perf_counter()
            try:
                ans = assistant.ask(q["question"])
            except Exception as e:  # noqa: BLE001 - a configuration that cannot answer says why in the table
                return {**spec, "error": str(e)[:200]}
            if spec["mode"] == "latent" and ans.raw_segments:
                return {**spec, "error": f"{ans.raw_segments} segments had no latents of this compressor and went in as "
                                         "raw text: not a latent-mode measurement"}
            rows.append({"em": best_over(exact_match, ans.text, q["targets"]),
                         "f1": best_over(token_f1, ans.text, q["targets"]),
                         "cited": any(c.path.endswith(q["file"]) for c in ans.citations),
                         "ttft": ans.timings.get("ttft_s", time.perf_counter() - t), "reused": ans.prefix_reused,
                         "positions": ans.positions, "text": ans.text,
                         # replies that were not answers (the best passage was shown instead), and answers
                         # that read a contents or index page as one of their passages
                         "junk": ans.junk, "listing": any(is_listing(c.text) for c in ans.citations)})
        peak = _proc_status("VmHWM")
    return {**spec, "rows": rows, "loaded_rss_mb": loaded, "peak_rss_mb": peak}


def _folder_label(r: dict) -> str:
    """The folder's length, which of that length's folders it is where there are several, and what lies beside."""
    k = r.get("folder_index", 0)
    beside = f" + {', '.join(r['beside'])}" if r.get("beside") else ""
    return f"{r['length']}" + (f" (folder {k + 1})" if k else "") + beside


def table(results: list[dict]) -> str:
    head = ("| folder tokens | mode | N | questions | EM | F1 | passage cited | no answer shown | listing read | "
            "TTFT cold (s) | TTFT warm, median (s) | "
            "prompt positions | its KV (MB, computed) | RSS with models loaded (MB) | peak RSS answering (MB) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in results:
        mode = r["mode"] + (f" ({r['style']})" if r.get("style", "append") != "append" else "")
        if "warm_s" in r:
            mode += f", {r['warmed']:,} positions read ahead in {r['warm_s']:.1f} s"
        n = r["ratio"] if r["mode"] == "latent" else "-"
        if "error" in r:
            lines.append(f"| {_folder_label(r)} | {mode} | {n} | | n/a: {r['error'][:80]} | | | | | | | | | | |")
            continue
        rows = r["rows"]
        warm = [x["ttft"] for x in rows[1:]] or [float("nan")]
        pos = statistics.median(x["positions"] for x in rows)
        lines.append(
            f"| {_folder_label(r)} | {mode} | {n} | {len(rows)} | "
            f"{100 * statistics.mean(x['em'] for x in rows):.0f}% | {100 * statistics.mean(x['f1'] for x in rows):.0f}% | "
            f"{100 * statistics.mean(x['cited'] for x in rows):.0f}% | {_count(rows, 'junk')} | {_count(rows, 'listing')} | "
            f"{rows[0]['ttft']:.1f} | {statistics.median(warm):.2f} | "
            f"{pos:,.0f} | {pos * KV_BYTES_PER_POSITION / 2**20:,.0f} | {r['loaded_rss_mb']:,.0f} | {r['peak_rss_mb']:,.0f} |")
    return head + "\n".join(lines)


def _count(rows: list[dict], key: str) -> str:
    """How many answers had ``key`` set (a report from before the key existed: n/a)."""
    return f"{sum(bool(x[key]) for x in rows)}" if all(key in x for x in rows) else "n/a"


def parse_config(conf: str) -> tuple[str, int, str]:
    """"mode:N[:OPTION...]" as (mode, N, options): the one spelling of a configuration, on the command line and in
    a report. Options (``config_options``): inplace, topK, xK; none is "append", the name reports have always used."""
    mode, n, *options = conf.split(":")
    config_options(":".join(options) or "append")  # a misspelt option fails here, before any run
    return mode, int(n), ":".join(options) or "append"


def config_options(options: str) -> dict:
    """AssistantConfig fields of a configuration's options: ``inplace`` (expanded passages replace their latents),
    ``topK`` (only the K best-ranked segments as latents, REFRAG-style), ``xK`` (K passages expanded; x0 is
    latents alone), ``partialK`` (a scope over the context is cut to K positions). ``warm`` is no setting: the
    run calls ``Assistant.warm`` first, as the app does when idle, so "TTFT cold" is the first question a user
    asks after the app has read the folder ahead."""
    out: dict = {}
    for opt in options.split(":"):
        if opt in ("append", "inplace"):
            out["expand_style"] = opt
        elif opt[:3] == "top" and opt[3:].isdigit():
            out["latent_top"] = int(opt[3:])
        elif opt[:1] == "x" and opt[1:].isdigit():
            out["expand_k"] = int(opt[1:])
        elif opt[:7] == "partial" and opt[7:].isdigit():
            out["partial_positions"] = int(opt[7:])
        elif opt != "warm":  # not a setting: run_one warms the documents block before the first question
            raise ValueError(f"unknown configuration option {opt!r} (inplace, topK, xK, partialK, warm)")
    return out


def config_of(run: dict) -> tuple[str, int, str]:
    """A report run's configuration, as ``parse_config`` spells it."""
    return run["mode"], run["ratio"], run.get("style", "append")


def paired(before: list[dict], after: list[dict], across_configs: bool = False) -> str:
    """Two runs of the same folders and questions, question by question: the change and its standard error.

    Greedy answers are deterministic, so the only variation is between questions; pairing them removes
    the part that both runs share (a hard question is hard for both), which is what lets 71 questions
    tell a 4-point change from noise. The folders of one length are pooled (their questions are disjoint),
    so each line is one length.

    ``across_configs`` pairs two configurations on the same folders (say latent:4 against latent:8, each
    report cut to one of them by ``select``): rows then match by length and folder alone, and the
    line names the after-side's configuration.
    """
    if across_configs and any(len({config_of(r) for r in side}) > 1 for side in (before, after)):
        raise ValueError("pairing across configurations needs one configuration a side: cut each report with select()")

    def key(r: dict) -> tuple:
        return (r["length"],) if across_configs else (r["length"], *config_of(r))

    head = ("| folder tokens | mode | N | questions | before EM / F1 | after EM / F1 | change EM (SE) | change F1 (SE) "
            "| answers that changed |\n|---|---|---|---|---|---|---|---|---|\n")

    def score(rows: list[dict]) -> str:
        return f"{100 * statistics.mean(x['em'] for x in rows):.1f} / {100 * statistics.mean(x['f1'] for x in rows):.1f}"

    def change(pairs: list[tuple[dict, dict]], metric: str) -> str:
        d = [100 * (y[metric] - x[metric]) for x, y in pairs]
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        return f"{statistics.mean(d):+.1f} ({se:.1f})"

    ok = {(key(r), r.get("folder_index", 0)): r for r in after if "error" not in r}
    pooled: dict[tuple, list[tuple[dict, dict]]] = {}
    for b in before:
        a = ok.get((key(b), b.get("folder_index", 0)))
        if a is None or "error" in b:
            continue
        # same folder, same questions, same order
        pooled.setdefault(key(b), []).extend(zip(b["rows"], a["rows"], strict=True))
    label = {key(r): config_of(r) for r in after}
    # every length of one configuration together too: the questions are disjoint, so their pairs pool,
    # and a decision that weighs the whole app (a ship rule) reads one line, not a mean of means
    every: dict[tuple, list[tuple[dict, dict]]] = {}
    for k, pairs in pooled.items():
        every.setdefault(label[k], []).extend(pairs)

    def line(length, config: tuple, pairs: list[tuple[dict, dict]]) -> str:
        mode, ratio, _ = config
        changed = sum(x["text"] != y["text"] for x, y in pairs)
        return (f"| {length} | {mode} | {ratio if mode == 'latent' else '-'} | {len(pairs)} | "
                f"{score([x for x, _ in pairs])} | {score([y for _, y in pairs])} | {change(pairs, 'em')} | "
                f"{change(pairs, 'f1')} | {changed} |")

    lines = [line(k[0], label[k], pairs) for k, pairs in pooled.items()]
    lengths = {k[0] for k in pooled}
    if len(lengths) > 1:
        lines += [line("all", config, pairs) for config, pairs in every.items()]
    return head + "\n".join(lines)


def select(results: list[dict], config: str) -> list[dict]:
    """The runs of one configuration ("mode:N" or "mode:N:inplace") in a report that holds several."""
    want = parse_config(config)
    picked = [r for r in results if config_of(r) == want]
    if not picked:
        have = sorted({f"{r['mode']}:{r['ratio']}" for r in results})
        raise SystemExit(f"no {config} runs in the report; it holds {', '.join(have)}")
    return picked


def _run_folder(args: argparse.Namespace, examples: list[FAQItem], tok, length: int, k: int, taken: set[str]) -> list[dict]:
    """Folder k of this length (disjoint from the earlier ones), every configuration in its own process."""
    tag = f"{length}" + (f"-{k}" if k else "")  # folder 0 keeps the one-folder runs' paths and questions
    tag += "-beside" if args.beside else ""
    folder = args.work / f"folder-{tag}"
    qfile = args.work / f"questions-{tag}.json"
    qfile.write_text(json.dumps(build_folder(examples, length, folder, tok, args.questions, taken=taken)))
    for f in args.beside:  # the same answers and questions, with big documents beside them
        (folder / "beside").mkdir(exist_ok=True)
        if not (folder / "beside" / f.name).exists():
            shutil.copy(f, folder / "beside" / f.name)
    out = []
    for conf in args.configs:
        mode, n, style = parse_config(conf)
        spec = {"length": length, "folder_index": k, "mode": mode, "ratio": n,
                "style": style, "backend": args.backend, "folder": str(folder),
                "questions": str(qfile), "data": str(args.work / f"data-{tag}-n{n}"),
                **({"beside": [f.name for f in args.beside]} if args.beside else {})}
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        out.append(json.loads(line[7:]) if line else {**spec, "error": done.stderr.strip()[-200:]})
        log.info("%s", {kk: v for kk, v in out[-1].items() if kk != "rows"})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 32768])
    p.add_argument("--questions", type=int, default=10, help="questions per folder, at most")
    p.add_argument("--sources", nargs="+", choices=list(SOURCES), default=list(DEFAULT_SOURCES),
                   help="FAQ sources of the folders and questions (bench/qa_data.py)")
    p.add_argument("--folders", type=int, nargs="+", default=[1],
                   help="folders per length, one number for all or one per --lengths (disjoint answers: a 4k "
                        "folder holds ~15 answers, so 4 folders give a 4k figure ~60 questions wide)")
    p.add_argument("--configs", nargs="*", default=CONFIGS, help="mode:N[:OPTION...]; options: inplace (expanded passages replace their latents), "
                        "topK (the K best-ranked segments as latents, not the whole scope), xK (expand K passages; "
                        "x0: latents alone), partialK (a scope over the context cut to K positions), warm (the "
                        "documents block read ahead before the first question)")
    p.add_argument("--beside", type=Path, nargs="*", default=[],
                   help="files put into every folder beside the FAQ answers (e.g. big PDFs, to make the scope "
                        "longer than the context); questions and answers stay the same")
    p.add_argument("--backend", default="llama.cpp")
    p.add_argument("--work", type=Path, default=Path("/tmp/lcd-bench-assistant"))
    p.add_argument("--out", type=Path)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--paired", nargs=2, metavar=("BEFORE", "AFTER"),
                   help="compare two runs' .json question by question (e.g. two sets of parts) and exit; "
                        "REPORT.json:mode:N takes one configuration of a report, so latent:4 and latent:8 "
                        "of the same folders pair with each other")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.paired:
        sides = []
        for spec in args.paired:  # REPORT.json or REPORT.json:mode:N
            path, cut, config = spec.partition(".json:")
            results = json.loads(Path(path + ".json" if cut else path).read_text())
            sides.append(select(results, config) if cut else results)
        across = any(".json:" in spec for spec in args.paired)
        print(f"{args.paired[0]} -> {args.paired[1]}, paired by question\n\n" + paired(*sides, across_configs=across))
        return 0
    if args.one:
        print("RESULT " + json.dumps(run_one(args)))
        return 0
    if args.smoke:
        args.lengths, args.questions, args.configs = [600], 2, ["latent:8", "rag:8"]
    if len(args.folders) not in (1, len(args.lengths)):
        p.error("--folders takes one number, or one per --lengths")
    counts = args.folders * len(args.lengths) if len(args.folders) == 1 else args.folders
    from lclm_core.default_model import load_default_decoder

    tok = load_default_decoder()[1]
    examples = load_items(args.sources)
    results = []
    t0 = time.time()
    for length, count in zip(args.lengths, counts):
        taken: set[str] = set()
        for k in range(count):
            results += _run_folder(args, examples, tok, length, k, taken)
    # A small folder holds fewer answerable questions than asked for: the table's column says how many each had.
    text = (f"bench/assistant.py, backend {args.backend}, up to {args.questions} FAQ questions per folder "
            f"({', '.join(args.sources)}: {len(examples)} items, sha256 {items_digest(examples)[:16]}), "
            f"{time.time() - t0:.0f} s\n\n" + table(results))
    print(text)
    if args.out:
        write_report(args.out, text, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
