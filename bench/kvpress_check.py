"""Our SnapKV (bench/snapkv.py) against NVIDIA kvpress's SnapKVPress: the same model, prompts and budgets.

kvpress 0.5.5 requires transformers<5.3 and the app runs 5.23, so kvpress runs
in a second environment: a folder holding the pinned packages below (made
with ``pip install --target`` when missing), put in front of this venv's
packages (torch and the rest come from the venv), in a child process:

    .venv/bin/python bench/kvpress_check.py --kvpress-env ~/kvpress-env --out bench/results/kvpress-check

The prompts are needle haystacks built as bench/run_all.py builds them (the
question at the end, so it sits in the observation window of both), read by
the default Gemma-3-270M in float32. kvpress prefills each prompt in one
forward pass under ``with SnapKVPress(...)(model)``; ours runs ``observe``
then ``select`` at the same budget and window. For every full-attention
layer and KV head the report gives the share of the positions kvpress keeps
(observation window excluded: both keep it whole) that ours keeps too.
Sliding-window layers are left out: kvpress skips them on Gemma-3 and so do we.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.kvpress_check")
# What kvpress 0.5.5 imports, at versions that sit beside this venv's torch and numpy: transformers<5.3 wants
# tokenizers<=0.23.0 and huggingface_hub<2; kvpress imports datasets (two presses load data sets) and fire.
KVPRESS_ENV_PINS = ("kvpress==0.5.5", "transformers==5.2.0", "tokenizers==0.22.1", "huggingface_hub>=1.3,<2",
                    "cachetools<6", "fire<0.7", "six", "termcolor", "datasets", "pyarrow", "dill", "xxhash", "multiprocess",
                    "fsspec")


def ensure_kvpress_env(target: Path) -> Path:
    """The kvpress environment folder, installed with ``pip install --target --no-deps`` when missing."""
    if (target / "kvpress").is_dir() and (target / "transformers").is_dir():
        return target
    log.info("installing kvpress and transformers 5.2 into %s (once)", target)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "--no-deps", *KVPRESS_ENV_PINS]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-800:]}")
    return target


# --- the kvpress side (child process, transformers 5.2) -------------------------------------------
def kvpress_kept(job: dict) -> list[dict]:
    """For each prompt and budget: per full layer, per KV head, the sorted positions SnapKVPress keeps."""
    import torch
    import transformers
    from kvpress import SnapKVPress
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.set_num_threads(job.get("threads") or torch.get_num_threads())
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32).eval()
    types = model.config.layer_types
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    window = job["window"]
    out = []
    with torch.no_grad():
        for ids in job["prompts"]:
            x = torch.tensor([ids])
            ref = model(input_ids=x, past_key_values=DynamicCache(config=model.config), use_cache=True).past_key_values
            total = len(ids)
            for budget in job["budgets"][str(total)]:
                press = SnapKVPress(compression_ratio=1 - (budget + 0.5) / total, window_size=window, kernel_size=5)
                with press(model):
                    cache = model(input_ids=x, past_key_values=DynamicCache(config=model.config),
                                  use_cache=True).past_key_values
                layers = {}
                for li in full:
                    k_full, k_kept = ref.layers[li].keys[0], cache.layers[li].keys[0]  # (kv_heads, len, dim)
                    heads = []
                    for h in range(k_full.shape[0]):
                        # each kept key is a row of the uncompressed cache: find it
                        d = torch.cdist(k_kept[h].float(), k_full[h].float())
                        heads.append(sorted(int(i) for i in d.argmin(-1)))
                    layers[str(li)] = heads
                out.append({"total": total, "budget": budget, "layers": layers})
    return [{"transformers": transformers.__version__, "kvpress": _version("kvpress")}, *out]


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


# --- our side, the prompts and the comparison (this venv) -------------------------------------------
def needle_prompts(tok, lengths: Sequence[int], depths: Sequence[float], seed: int) -> list[list[int]]:
    """BOS + "Text:" + the haystack + the question: run_all's needle prompt, as token ids."""
    sys.path.insert(0, str(ROOT))
    from bench.eval_qa import NEEDLE_SUFFIX, ensure_essays, load_essays, needle_haystacks
    from lclm_core.inputs import tokenize_text

    head = [tok.bos_token_id] + tokenize_text(tok, "Text:\n")
    tail = tokenize_text(tok, NEEDLE_SUFFIX)
    essays = load_essays(ensure_essays())
    return [head + hay.ids + tail for *_, hay in needle_haystacks(tok, essays, lengths, depths, 1, seed)]


def ours_kept(dec, ids: list[int], budgets: Sequence[int], window: int) -> dict[int, dict[str, list[list[int]]]]:
    """budget -> per full layer, per KV head, the positions ours keeps; one observed prefill serves every budget."""
    from bench.snapkv import observe, select
    from lclm_core.inputs import TokenIds

    obs = observe(dec, dec.build([TokenIds(tuple(ids))], add_bos=False), window)
    return {b: {str(li): [sorted(row.tolist()) for row in select(s, b - window)] for li, s in obs.scores.items()}
            for b in budgets}


def compare(ours: dict[str, list[list[int]]], theirs: dict[str, list[list[int]]], total: int, window: int) -> float:
    """Share of kvpress's kept positions (outside the window) that ours keeps, over layers and heads."""
    both = kept = 0
    for li, heads in theirs.items():
        for h, positions in enumerate(heads):
            t = {p for p in positions if p < total - window}
            both += len(t & set(ours[li][h]))
            kept += len(t)
    return both / kept if kept else 1.0


def check(env: Path, dec, lengths: Sequence[int], depths: Sequence[float], ratios: Sequence[int],
          window: int = 32, seed: int = 0) -> tuple[str, dict]:
    """(markdown table, figures): kvpress in the ``env`` folder (made when missing) against ours on ``dec``.

    ``dec`` is a TorchDecoder over the default Gemma; kvpress loads the same weights from its transformers copy.
    """
    import tempfile

    import torch
    import transformers

    from lclm_core.default_model import _hf_copy_dir, ensure_gguf

    env = ensure_kvpress_env(Path(env).expanduser())
    prompts = needle_prompts(dec.tokenizer, lengths, depths, seed)
    budgets = {str(len(ids)): [len(ids) // n for n in ratios] for ids in prompts}
    job = {"model_dir": str(_hf_copy_dir(ensure_gguf())), "prompts": prompts, "budgets": budgets,
           "window": window, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        jf, rf = Path(tmp) / "job.json", Path(tmp) / "result.json"
        jf.write_text(json.dumps(job))
        child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(env), os.environ.get("PYTHONPATH", "")])}
        log.info("kvpress side: %d prompts in a child process (transformers from %s)", len(prompts), env)
        subprocess.run([sys.executable, __file__, "--child", str(jf), str(rf)], env=child_env, check=True)
        theirs = json.loads(rf.read_text())
    versions, theirs = theirs[0], theirs[1:]
    rows = []
    it = iter(theirs)
    for ids in prompts:
        ours = ours_kept(dec, ids, budgets[str(len(ids))], window)
        for budget in budgets[str(len(ids))]:
            t = next(it)
            assert t["total"] == len(ids) and t["budget"] == budget
            kept = {len(h) for heads in t["layers"].values() for h in heads}
            if kept != {budget}:
                raise RuntimeError(f"kvpress kept {sorted(kept)} positions per head, asked for {budget}")
            share = compare(ours[budget], t["layers"], len(ids), window)
            rows.append({"positions": len(ids), "budget": budget, "ratio": round(len(ids) / budget), "agreement": share})
            log.info("%d positions, budget %d: %.1f%% of kvpress's kept positions kept by ours", len(ids), budget,
                     100 * share)
    lines = [f"SnapKV: ours (bench/snapkv.py, transformers {transformers.__version__}) against kvpress "
             f"{versions['kvpress']} SnapKVPress (transformers {versions['transformers']}), default Gemma-3-270M "
             f"float32, window {window}, kernel 5; needle prompts, depths {list(depths)}", "",
             "| prompt positions | N | budget | kvpress's kept positions that ours keeps too (full layers, every KV head) |",
             "|---|---|---|---|"]
    lines += [f"| {r['positions']:,} | {r['ratio']} | {r['budget']:,} | {100 * r['agreement']:.1f}% |" for r in rows]
    lines += ["", f"Median over {len(rows)} prompt x budget pairs: "
                  f"{100 * statistics.median(r['agreement'] for r in rows):.1f}%; lowest "
                  f"{100 * min(r['agreement'] for r in rows):.1f}%."]
    return "\n".join(lines), {"versions": versions, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kvpress-env", type=Path, help="a folder for kvpress and transformers<5.3 (made when missing)")
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--ratios", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    p.add_argument("--child", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.child:
        job = json.loads(Path(args.child[0]).read_text())
        Path(args.child[1]).write_text(json.dumps(kvpress_kept(job)))
        return 0
    if not args.kvpress_env:
        p.error("--kvpress-env is required (a folder; made when missing)")
    sys.path.insert(0, str(ROOT))
    from lclm_core.default_model import load_default_decoder
    from lclm_core.device import resolve
    from lclm_core.torch_backend import TorchDecoder

    model, tok = load_default_decoder(resolve("cpu", "float32"))
    md, report = check(args.kvpress_env, TorchDecoder(model, tok), args.lengths, args.depths, args.ratios,
                       args.window, args.seed)
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(md + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
