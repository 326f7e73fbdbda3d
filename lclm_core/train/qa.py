"""Question-answer examples made from the training text itself, for the QA stage.

The paper ends its recipe with instruction/QA tuning. We make the questions
from our own training shards instead of borrowing a QA data set: the one QA set
installable here (BIG-bench's disfl_qa) is an evaluation set whose canary asks
that it never be trained on, and every question built from the shards inherits
their held-out split. Three kinds, each answerable only by reading the
compressed passage (the answer is a span the decoder must copy out of it):

  follows  "What comes right after "<six words>" in the text?" -> the next words;
  blank    a sentence from the passage with one word blanked -> that word;
  fact     a made-up fact (a code, a year, a room number, ...) put into the
           passage at a sentence end -> the question about it; in a share of
           these the fact is left out and the answer is "unknown", so that the
           model learns to say so rather than invent a number.

The last kind trains the same skill the needle measure tests (recall a
number that sits once in a long text); its templates, nouns and names are
written here and share nothing with the needle's sentence or essays.

Each example is a passage of exactly ``passage_len`` tokens (compressed) and a
continuation "\\n\\nQuestion: q\\nAnswer: a\\n" whose answer tokens (with the
closing newline, which teaches the answer to stop) carry the loss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..inputs import tokenize_text
from .data import TokenShards

KINDS = ("follows", "blank", "fact")

NOUNS = (
    "archive", "boiler", "server", "garden shed", "library vault", "workshop", "laboratory", "warehouse",
    "observatory", "greenhouse", "radio tower", "museum wing", "cellar", "pump station", "studio",
    "sailing club", "bakery", "printing press", "clock tower", "weather station", "data centre", "harbour office",
)
NAMES = (
    "Amara Okafor", "Lena Fischer", "Tomas Novak", "Priya Raman", "Mateo Alvarez", "Yuki Tanaka", "Sven Lindqvist",
    "Chloe Martin", "Ibrahim Haddad", "Maren Olsen", "Diego Rocha", "Aiko Mori", "Farah Siddiqui", "Pavel Ivanov",
)
COLOURS = ("teal", "crimson", "amber", "violet", "olive", "indigo", "scarlet", "ochre", "turquoise", "maroon")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _number(rng: np.random.Generator) -> str:
    digits = int(rng.integers(3, 8))
    return str(int(rng.integers(10 ** (digits - 1), 10**digits)))


def _fact(rng: np.random.Generator) -> tuple[str, str, str]:
    """(sentence, question, answer) of one made-up fact."""
    noun, name = NOUNS[rng.integers(len(NOUNS))], NAMES[rng.integers(len(NAMES))]
    k = int(rng.integers(6))
    if k == 0:
        num = _number(rng)
        return f"The access code for the {noun} is {num}.", f"What is the access code for the {noun}?", num
    if k == 1:
        year = str(int(rng.integers(1700, 2030)))
        return f"{name} was born in {year}.", f"In which year was {name} born?", year
    if k == 2:
        num = _number(rng)
        return f"The {noun} keeps its spare keys in locker {num}.", f"In which locker does the {noun} keep its spare keys?", num
    if k == 3:
        c = COLOURS[rng.integers(len(COLOURS))]
        return f"The door of the {noun} is painted {c}.", f"What colour is the door of the {noun}?", c
    if k == 4:
        d = WEEKDAYS[rng.integers(len(WEEKDAYS))]
        return f"{name} visits the {noun} every {d}.", f"On which day does {name} visit the {noun}?", d
    num = _number(rng)
    return f"{name}'s badge number is {num}.", f"What is {name}'s badge number?", num


@dataclass
class QAExample:
    passage: np.ndarray  # (T,) token ids: the text to compress
    continuation: np.ndarray  # (Y,) "\n\nQuestion: ...\nAnswer: ...\n"
    answer_mask: np.ndarray  # (Y,) bool: the answer's tokens and the newline after them (the loss)
    kind: str
    answer: str
    score_mask: np.ndarray | None = None  # (Y,) bool: the answer's tokens alone (what evaluation checks)
    question: str = ""


WORD = re.compile(r"\S+")


class QASampler:
    """Cuts QA examples out of token shards; deterministic for a given generator."""

    def __init__(self, shards: TokenShards, tokenizer, passage_len: int, unknown_share: float = 0.15,
                 kinds: Sequence[str] = KINDS) -> None:
        self.shards, self.tok, self.passage_len = shards, tokenizer, passage_len
        self.unknown_share = unknown_share
        self.kinds = tuple(kinds)

    def _text(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def _qa(self, passage: np.ndarray, question: str, answer: str, kind: str) -> QAExample:
        q = tokenize_text(self.tok, f"\n\nQuestion: {question}\nAnswer:")
        a = tokenize_text(self.tok, f" {answer}")
        cont = np.asarray(q + a + tokenize_text(self.tok, "\n"), dtype=np.int64)
        mask, score = np.zeros(len(cont), dtype=bool), np.zeros(len(cont), dtype=bool)
        mask[len(q):] = True
        score[len(q) : len(q) + len(a)] = True
        return QAExample(np.asarray(passage, dtype=np.int64), cont, mask, kind, answer, score, question)

    def _follows(self, rng, ids: np.ndarray) -> QAExample | None:
        words = WORD.findall(self._text(ids))
        if len(words) < 16:
            return None
        i = int(rng.integers(6, len(words) - 4))
        cue, answer = " ".join(words[i - 6 : i]), " ".join(words[i : i + 4])
        if " ".join(words).count(cue) != 1 or len(cue) > 80 or len(answer) > 60:  # one place; words, not a run of CJK
            return None
        return self._qa(ids, f'What comes right after "{cue}" in the text?', answer, "follows")

    def _blank(self, rng, ids: np.ndarray) -> QAExample | None:
        text = self._text(ids)
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if 8 <= len(s.split()) <= 40]
        if not sentences:
            return None
        sent = sentences[int(rng.integers(len(sentences)))]
        words = sent.split()
        cands = [k for k, w in enumerate(words[1:], 1) if re.fullmatch(r"[A-Za-z0-9][\w-]{3,}", w)]
        if not cands:
            return None
        k = cands[int(rng.integers(len(cands)))]
        blanked = " ".join(words[:k] + ["___"] + words[k + 1 :])
        return self._qa(ids, f'Which word is missing from this sentence of the text: "{blanked}"?', words[k], "blank")

    def _fact(self, rng, ids: np.ndarray) -> QAExample | None:
        sentence, question, answer = _fact(rng)
        if rng.random() < self.unknown_share:  # the fact is not in the passage
            return self._qa(ids[: self.passage_len], question, "unknown", "fact")
        fact = np.asarray(tokenize_text(self.tok, " " + sentence), dtype=np.int64)
        if len(fact) >= self.passage_len:  # no room for it: ids[:negative] would have made the passage longer
            return None
        body = ids[: self.passage_len - len(fact)]
        # Insert after a token that ends a sentence where there is one, so the
        # fact reads as a sentence of the text rather than cutting a word.
        ends = [j + 1 for j in range(len(body) - 1) if self._text(body[j : j + 1]).endswith((".", "\n"))]
        at = int(ends[int(rng.integers(len(ends)))]) if ends else int(rng.integers(len(body) + 1))
        return self._qa(np.concatenate([body[:at], fact, body[at:]]), question, answer, "fact")

    def sample(self, rng: np.random.Generator, tries: int = 32) -> QAExample:
        for _ in range(tries):
            ids = self.shards.sample(rng, self.passage_len, 0).passage
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            ex = {"follows": self._follows, "blank": self._blank, "fact": self._fact}[kind](rng, ids)
            if ex is not None:
                return ex
        raise ValueError("no QA example could be cut from the shards; are the documents text?")


def collate(examples: Sequence[QAExample], pad_id: int, score: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(passages, continuations right-padded, answer mask (or, with ``score``, the scored tokens), valid mask).

    Right padding is safe in a causal decoder: a pad only follows the tokens
    that carry a loss, so it never changes what they see.
    """
    y = max(len(e.continuation) for e in examples)
    cont = np.full((len(examples), y), pad_id, dtype=np.int64)
    ans = np.zeros((len(examples), y), dtype=bool)
    valid = np.zeros((len(examples), y), dtype=bool)
    for r, e in enumerate(examples):
        n = len(e.continuation)
        mask = e.score_mask if score and e.score_mask is not None else e.answer_mask
        cont[r, :n], ans[r, :n], valid[r, :n] = e.continuation, mask, True
    return np.stack([e.passage for e in examples]), cont, ans, valid
