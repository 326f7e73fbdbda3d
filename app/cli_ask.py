"""``lclm-docs ask "question"``: one answer over the indexed documents, streamed, then its citations."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import UserError
from .settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="answer a question from the indexed documents, with citations")
    p.add_argument("question")
    p.add_argument("--scope", nargs="*", default=[], metavar="PATH",
                   help="folders or documents to ask over (default: every indexed document)")
    p.add_argument("--mode", choices=("latent", "full", "rag"), default="latent",
                   help="latent: compressed documents + expanded passages (default); full: raw text; rag: bm25 passages")
    p.add_argument("--ratio", type=int, choices=(4, 8, 16), help=f"compression ratio N (default: settings, {Settings.ratio})")
    p.add_argument("--backend", choices=("torch", "llama.cpp"), help="decoder backend (default: settings, torch)")
    p.add_argument("--expand", type=int, default=3, help="passages put back as raw text (latent mode)")
    p.add_argument("--agent", type=int, default=0, metavar="ROUNDS",
                   help="let the model ask for passages (EXPAND: i,j) for up to ROUNDS rounds first")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--json", action="store_true", help="print the answer and citations as one JSON object")
    p.set_defaults(func=cmd_ask)


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from .assistant import AssistantConfig, AssistantError, Scope
    from .services import ServiceError, open_assistant, open_store

    if not settings.store_path.exists():
        raise UserError(f"nothing indexed yet in {settings.data_dir}: run `lclm-docs index FOLDER` first")
    folders, paths = [], []
    for raw in args.scope:
        p = Path(raw).expanduser().resolve()
        if p.is_dir():
            folders.append(str(p))
        elif p.exists():
            paths.append(str(p))
        else:
            raise UserError(f"no such file or folder: {raw}")
    store = open_store(settings)
    try:
        cfg = AssistantConfig(mode=args.mode, expand_k=args.expand, agent_rounds=args.agent,
                              max_new_tokens=args.max_new_tokens)
        try:
            assistant = open_assistant(settings, store, ratio=args.ratio, backend=args.backend, config=cfg)
        except ServiceError as e:
            raise UserError(str(e)) from e
        with assistant:
            answer, streamed = None, ""
            try:
                for piece in assistant.stream(args.question, Scope(folders=tuple(folders), paths=tuple(paths))):
                    if isinstance(piece, str):
                        streamed += piece
                        if not args.json:
                            print(piece, end="", flush=True)
                    else:
                        answer = piece
            except AssistantError as e:
                raise UserError(str(e)) from e
        assert answer is not None
        if args.json:
            from dataclasses import asdict

            print(json.dumps(asdict(answer), indent=2))
            return 0
        print()
        if answer.junk and streamed.strip() != answer.text:  # the reply turned out not to be an answer
            print(f"(that reply was not an answer: {answer.junk})\n{answer.text}")
        for c in answer.citations:
            where = f", {c.location}" if c.location else f", page {c.page}" if c.page else ""
            snippet = " ".join(c.text.split())[:160]
            print(f"  [{c.number}] {c.path}{where} (segment {c.segment_id}): {snippet}…")
        if answer.left_out:
            print(f"  not read (did not fit the context): {', '.join(answer.left_out)}", file=sys.stderr)
        for path, (read, total) in answer.partial.items():
            print(f"  read in part (its {read:,} most relevant of {total:,} passages; the rest did not fit the "
                  f"context): {path}", file=sys.stderr)
        if answer.raw_segments:
            print(f"  {answer.raw_notice()}: `lclm-docs index` on their folders compresses them", file=sys.stderr)
        t = answer.timings
        print(f"  ({answer.mode}, {answer.positions:,} positions, first token {t.get('ttft_s', 0):.1f} s"
              f"{', documents prefix reused' if answer.prefix_reused else ''})", file=sys.stderr)
        return 0
    finally:
        store.close()
