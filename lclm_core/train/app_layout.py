"""App-layout batches: the decoder learns to answer from the prompt the app really builds (issue 30).

Every earlier objective showed the decoder one compressed passage and a
continuation. The app shows it something else: instructions, several
documents as latent blocks (most of them about something else), a few
passages quoted back as raw text, the question, then "Answer:". Latent mode
measured no better than plain retrieval, and the decoder had never been
trained on that prompt. This stage trains on it.

An example is D passages from the training shards, each one document of one
segment, all compressed. A question is cut from one of them (the gold
passage; qa.QASampler's follows / blank / fact kinds, so the answer is in the
text). The quoted-passages block holds up to ``quotes`` raw passages, the
way the app expands its best-ranked segments: the gold one in a share of the
examples (retrieval found it), only distractors or none in the rest, where
the answer must come from the latents (what "latents carry answers" asks).

The prompt is built by the app's own layout (lclm_core.prompt) and the app's
own InputBuilder, so training and use cannot drift apart. Targets (PISCO,
arXiv 2501.16075): the teacher reads only the gold passage, as a quoted
passage (rag's layout, where the decoder does best); the student is the
trained decoder reading the app's latent prompt. The teacher is, by
``teacher_of``, the decoder as the stage began, LoRA included (a frozen copy),
or the untouched base decoder. The base one was the first choice and the CPU
pilot showed why not: it answers in another register ("On Thursday.", a whole
quoted sentence; 0 of 96 held-out template answers exactly), so its KL pulls
the brief answers the app needs apart. The loss is
cross-entropy on the answer tokens plus the KL from the teacher's next-token
distributions to the student's on those tokens. ``targets="teacher"`` swaps
the template answer for the teacher's own greedy answer (PISCO's recipe,
which needs no gold label); the template answer is the default, since a
270M teacher misses many of them.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..inputs import InputBuilder, Latents, Text, tokenize_text
from ..lora import lora_disabled
from ..prompt import INSTRUCTIONS, document_header, question_block
from ..torch_backend import last_position
from .data import TokenShards, pad_id
from .qa import QASampler

STEMS = ("notes", "report", "manual", "handbook", "minutes", "guide", "overview", "reference", "memo", "summary",
         "chapter", "howto", "readme", "policy", "faq", "letter", "draft", "plan", "spec", "article")
SUFFIXES = (".pdf", ".txt", ".md", ".docx", ".html")
TARGETS = ("gold", "teacher")
TEACHERS = ("start", "base")


def freeze_teacher(module) -> None:
    """Keep a frozen copy of the decoder as it is now (LoRA included) as the app-layout teacher.

    Not a registered submodule: its weights are no trainable part, never saved, never synced.
    """
    teacher = copy.deepcopy(module.decoder).eval()
    teacher.requires_grad_(False)
    object.__setattr__(module, "app_teacher", teacher)


@contextmanager
def teacher_of(module):
    """The decoder that plays the teacher: the frozen copy where ``freeze_teacher`` made one, else the
    module's decoder with its LoRA switched off (the untouched base)."""
    frozen = getattr(module, "app_teacher", None)
    if frozen is not None:
        yield frozen
    else:
        with lora_disabled(module.decoder):
            yield module.decoder


@dataclass
class AppExample:
    passages: np.ndarray  # (D, T) token ids: each document's one segment, compressed
    student: list[int]  # the app's latent prompt, placeholder ids at latent positions, up to "Answer:"
    latent_at: list[int]  # where each passage's latent run starts in ``student`` (D entries)
    teacher: list[int]  # the teacher's prompt: the gold passage alone, quoted, then the question
    answer: list[int]  # " answer" and the newline that ends it
    gold_quoted: bool  # the gold passage is among the quoted passages
    kind: str
    question: str
    answer_text: str


def _where(rng: np.random.Generator, k: int) -> str:
    """A made-up document name, and a page where it is a PDF (as app.assistant.place writes it)."""
    name = f"{STEMS[rng.integers(len(STEMS))]}-{k}{SUFFIXES[rng.integers(len(SUFFIXES))]}"
    return f"{name}, page {int(rng.integers(1, 300))}" if name.endswith(".pdf") else name


class AppSampler:
    """App-layout examples cut from token shards; deterministic for a given generator."""

    def __init__(self, shards: TokenShards, tokenizer, builder: InputBuilder, passage_len: int, ratio: int,
                 documents: int = 6, quotes: int = 3, gold_quoted: float = 0.6, unknown_share: float = 0.1) -> None:
        if documents < 1 or quotes < 0:
            raise ValueError("an app-layout example needs at least one document and no negative quotes")
        self.qa = QASampler(shards, tokenizer, passage_len, unknown_share)
        self.shards, self.tok, self.builder = shards, tokenizer, builder
        self.passage_len, self.m = passage_len, -(-passage_len // ratio)
        self.documents, self.quotes, self.gold_quoted = documents, min(quotes, documents), gold_quoted

    def _text(self, ids: np.ndarray) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def sample(self, rng: np.random.Generator) -> AppExample:
        gold = self.qa.sample(rng)
        others = [self.shards.sample(rng, self.passage_len, 0).passage for _ in range(self.documents - 1)]
        at = int(rng.integers(self.documents))
        passages = np.stack([*others[:at], gold.passage, *others[at:]]).astype(np.int64)
        names = [_where(rng, int(k)) for k in rng.choice(1000, self.documents, replace=False)]
        # The quoted passages, best first as the app orders them: the gold one (first, or further down)
        # where retrieval "found" it, else distractors only; sometimes none (latents alone).
        n_quotes = int(rng.integers(0, self.quotes + 1)) if self.quotes else 0
        quoted = n_quotes > 0 and rng.random() < self.gold_quoted
        pool = [i for i in rng.permutation(self.documents).tolist() if i != at]
        picks = pool[: n_quotes - quoted] if n_quotes else []
        if quoted:
            picks.insert(0 if rng.random() < 0.6 else int(rng.integers(len(picks) + 1)), at)
        parts: list = [Text(INSTRUCTIONS)]
        for name, _ in zip(names, passages):
            parts += [Text(document_header(name.split(",")[0])), Latents(torch.zeros(self.m, 1))]
        question = gold.question
        parts.append(Text(question_block(question, [(names[i], self._text(passages[i])) for i in picks])))
        built = self.builder.build(parts, add_bos=True)
        teacher = self.builder.build([Text(INSTRUCTIONS),
                                      Text(question_block(question, [(names[at], self._text(gold.passage))]))])
        answer = tokenize_text(self.tok, f" {gold.answer}") + tokenize_text(self.tok, "\n")
        return AppExample(passages, built.token_ids(), [r.start for r in built.latent_positions()],
                          teacher.token_ids(), answer, quoted, gold.kind, question, gold.answer)


def _padded(seqs: list[list[int]], pad_id: int, device) -> torch.Tensor:
    out = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
    for r, s in enumerate(seqs):
        out[r, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out.to(device)


@torch.no_grad()
def teacher_answers(module, examples: list[AppExample], max_new_tokens: int = 16) -> list[list[int]]:
    """The teacher's greedy answer to each teacher prompt, up to and with its first newline."""
    tok = module.compressor.tokenizer
    newline = tokenize_text(tok, "\n")
    out = []
    with teacher_of(module) as teacher:
        for e in examples:
            ids = torch.tensor([e.teacher], device=next(teacher.parameters()).device)
            gen = teacher.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                          do_sample=False, pad_token_id=pad_id(tok))[0, ids.shape[1]:].tolist()
            text = tok.decode(gen, skip_special_tokens=True).split("\n")[0].rstrip()
            out.append(tokenize_text(tok, text) + newline if text.strip() else list(e.answer))
    return out


def app_loss(module, examples: list[AppExample], pad_id: int, kl_weight: float = 1.0,
             answers: list[list[int]] | None = None) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """(loss, its parts, whether each answer's tokens were all the student's argmax) for one batch.

    Right padding is safe in a causal decoder: a pad only follows the tokens that carry a loss.
    """
    dev = next(module.decoder.parameters()).device
    answers = answers or [e.answer for e in examples]
    b, d = len(examples), examples[0].passages.shape[0]
    z = module.latents(torch.tensor(np.concatenate([e.passages for e in examples]), device=dev))
    m = z.shape[1]
    student = [e.student + a for e, a in zip(examples, answers)]
    emb = module.embed(_padded(student, pad_id, dev))
    rows = torch.arange(b, device=dev).repeat_interleave(d * m)
    cols = torch.tensor([p + j for e in examples for p in e.latent_at for j in range(m)], device=dev)
    emb = emb.index_put((rows, cols), z.reshape(-1, z.shape[-1]).to(emb.dtype))
    last = module._run(emb, False).last_hidden_state

    def at_answers(h: torch.Tensor, prompts: list[int]) -> torch.Tensor:
        return torch.cat([h[r, p - 1 : p - 1 + len(a)] for r, (p, a) in enumerate(zip(prompts, answers))])

    s_h = at_answers(last, [len(e.student) for e in examples])
    targets = torch.tensor([t for a in answers for t in a], device=dev)
    t_h = None
    if kl_weight:
        with torch.no_grad(), teacher_of(module) as t:
            ids = _padded([e.teacher + a for e, a in zip(examples, answers)], pad_id, dev)
            t_out = t.model(inputs_embeds=t.get_input_embeddings()(ids), use_cache=False)
            t_h = at_answers(t_out.last_hidden_state, [len(e.teacher) for e in examples])
    s_logits, t_logits, tgt = module._logits(s_h, targets, t_h)
    ce = F.cross_entropy(s_logits, tgt)
    parts = {"answer_ce": ce}
    total = ce
    if t_logits is not None:
        parts["answer_kl"] = F.kl_div(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), log_target=True,
                                      reduction="none").sum(-1).mean()
        total = total + kl_weight * parts["answer_kl"]
    hit = (s_logits.argmax(-1) == tgt).split([len(a) for a in answers])
    exact = torch.stack([h.all() for h in hit])
    parts["total"] = total
    return total, {k: float(v.detach()) for k, v in parts.items()}, exact


@torch.no_grad()
def evaluate_app(module, examples: list[AppExample], pad_id: int) -> dict:
    """Held-out app-layout figures: answer cross-entropy and exact answers (teacher-forced argmax), with the
    gold passage quoted and with the answer left to the latents; and, the bars, the exact answers of this
    decoder reading the gold passage alone as rag would quote it (``app_rag_exact``), and of the untouched
    base decoder doing the same (``app_teacher_exact``)."""
    was_training = module.training
    module.eval()  # every figure over the whole vocabulary (``_logits`` restricts it only while training)
    ce: dict[bool, list[float]] = {True: [], False: []}
    hit: dict[bool, list[bool]] = {True: [], False: []}
    teacher_hit, rag_hit = [], []
    for e in examples:  # one at a time: a figure per example, whatever the padding
        _, parts, exact = app_loss(module, [e], pad_id, kl_weight=0.0)
        ce[e.gold_quoted].append(parts["answer_ce"])
        hit[e.gold_quoted].append(bool(exact[0]))
        teacher_hit.append(_reads_gold_exactly(module, e, base=True))
        rag_hit.append(_reads_gold_exactly(module, e, base=False))
    module.train(was_training)
    out = {"app_examples": len(examples), "app_teacher_exact": float(np.mean(teacher_hit)),
           "app_rag_exact": float(np.mean(rag_hit))}
    for quoted, name in ((True, "quoted"), (False, "latents")):
        if hit[quoted]:
            out[f"app_{name}_n"] = len(hit[quoted])
            out[f"app_{name}_exact"] = float(np.mean(hit[quoted]))
            out[f"app_{name}_ce"] = float(np.mean(ce[quoted]))
    return out


def _reads_gold_exactly(module, e: AppExample, base: bool) -> bool:
    """Whether the decoder (the untouched base, or as trained) reading the teacher prompt gives the answer."""
    dev = next(module.decoder.parameters()).device
    ids = torch.tensor([e.teacher + e.answer], device=dev)
    keep = last_position(dev, len(e.answer) + 1)  # logits where the answer is predicted only, from compact rows
    with (lora_disabled(module.decoder) if base else nullcontext()):
        logits = module.decoder(input_ids=ids, logits_to_keep=keep).logits[0, :-1]
    return bool((logits.argmax(-1) == torch.tensor(e.answer, device=dev)).all())


def heldout_app(sampler: AppSampler, n: int, seed: int = 2468) -> list[AppExample]:
    """n fixed app-layout examples (give it a sampler on the held-out split): the same ones for every checkpoint."""
    rng = np.random.default_rng(seed)
    return [sampler.sample(rng) for _ in range(n)]
