"""Model commands: ``check`` (is the embedded default usable here?) and ``generate``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli import UserError
from .settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check the embedded default model: file, load, device, a short generation")
    p.add_argument("--ratio", type=int, default=None, help=f"compression ratio of the compressor to report (default: settings, {Settings.ratio})")
    p.set_defaults(func=cmd_check)

    g = sub.add_parser("generate", help="stream a completion from the decoder, optionally reading files as latents")
    g.add_argument("prompt", help="text the decoder continues")
    g.add_argument("--context", action="append", default=[], metavar="FILE",
                   help="a text file compressed into latents and put before the prompt (repeatable)")
    g.add_argument("--ratio", type=int, default=None)
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("convert-decoder", help="turn an LCLM checkpoint's decoder/ into a GGUF for the llama.cpp backend")
    c.add_argument("checkpoint", help="checkpoint directory (or hub id, when online)")
    c.add_argument("--out", type=Path, help="GGUF file to write (default: <checkpoint>/decoder-<outtype>.gguf)")
    c.add_argument("--outtype", default="q8_0", choices=["f32", "f16", "bf16", "q8_0"])
    c.add_argument("--llama-cpp-dir", help="a llama.cpp checkout holding convert_hf_to_gguf.py (default: fetched once)")
    c.set_defaults(func=cmd_convert)


def _placement(settings: Settings):
    from lclm_core.device import resolve

    try:
        return resolve(settings.device, settings.dtype)
    except ValueError as e:
        raise UserError(str(e)) from e


def _load(settings: Settings, ratio: int):
    from lclm_core.default_model import DefaultModelError, default_compressor, load_default_decoder

    placement = _placement(settings)
    try:
        comp = default_compressor(ratio, placement, decoder=load_default_decoder(placement))
        model, tok = load_default_decoder(placement, ratio=ratio)  # with the ratio's decoder LoRA, if it ships one
    except DefaultModelError as e:
        raise UserError(str(e)) from e
    return placement, model, tok, comp


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from lclm_core.backend import GenerationConfig
    from lclm_core.default_model import ensure_gguf, load_default_decoder
    from lclm_core.inputs import Text
    from lclm_core.torch_backend import TorchDecoder

    ratio = args.ratio or settings.ratio
    gguf = ensure_gguf()
    print(f"default model file: {gguf} (sha256 verified)")
    t = time.perf_counter()
    placement, model, tok, comp = _load(settings, ratio)
    adapted = model is not load_default_decoder(placement)[0]
    print(f"decoder: Gemma-3-270M{' + the decoder LoRA of N=%d' % ratio if adapted else ''} on {placement}, "
          f"loaded in {time.perf_counter() - t:.1f} s")
    state = "trained" if comp.trained else "UNTRAINED (latents carry no learned content yet)"
    print(f"compressor: N={ratio}, {state}; fingerprint {comp.fingerprint}; {comp.description}")
    with TorchDecoder(model, tok, comp.config.memory_tokens) as dec:
        logits = dec.prefill([Text("The three primary colours are")])
        sys.stdout.write("generation: The three primary colours are")
        for piece in dec.generate(GenerationConfig(max_new_tokens=16, stop=["\n"]), logits=logits):
            sys.stdout.write(piece)
            sys.stdout.flush()
    print()
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from lclm_core.backend import ContextLengthError, GenerationConfig
    from lclm_core.inputs import Latents, Text
    from lclm_core.torch_backend import TorchDecoder

    ratio = args.ratio or settings.ratio
    _, model, tok, comp = _load(settings, ratio)
    parts: list = []
    for f in args.context:
        try:
            text = Path(f).read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise UserError(f"cannot read {f}: {e.strerror}") from e
        (lat,) = comp.compress([text])
        parts += [Text(f"Document {Path(f).name}:\n"), Latents(lat.data), Text("\n\n")]
    parts.append(Text(args.prompt))
    cfg = GenerationConfig(max_new_tokens=args.max_tokens, temperature=args.temperature, stop=args.stop)
    with TorchDecoder(model, tok, comp.config.memory_tokens) as dec:
        try:
            logits = dec.prefill(parts)
        except ContextLengthError as e:
            raise UserError(str(e)) from e
        for piece in dec.generate(cfg, logits=logits):
            sys.stdout.write(piece)
            sys.stdout.flush()
    print()
    return 0


def cmd_convert(args: argparse.Namespace, settings: Settings) -> int:
    from lclm_core.checkpoint import CheckpointError
    from lclm_core.convert import ConverterError, convert_decoder

    try:
        out = convert_decoder(args.checkpoint, args.out, args.outtype, args.llama_cpp_dir)
    except (CheckpointError, ConverterError) as e:
        raise UserError(str(e)) from e
    print(f"wrote {out} (llama.cpp decoder for {args.checkpoint}; lclm_core.convert.load_with_gguf pairs them)")
    return 0
