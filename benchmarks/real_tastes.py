"""Simulated users of real replies, for benchmarks/tastes.py --real.

The pool: the real model (SmolLM2-135M-Instruct, the GGUF file `rlchat
init-model --real` fetches) answers each of the 100 messages of
real_messages.py --per-message times, 8 replies a turn at the chat's
default length, sampled once and cached under ~/.cache/rlchat:
- `local`: rlchat's own generator (its hidden states come with the pool);
- `served`: llama-server serving the same GGUF file (no hidden state).

Beside it, every text's vector twice: the judge's (all-MiniLM-L6-v2 over
the whole reply, judge.py), which the tastes read, and the product's
`local:` embeddings (the same model over a text's first EMBED_TOKENS
tokens), which the learner reads with `--embeddings local:`.  The two are
the same model, so the semantic tastes are in the learner's reach only as
far as the first 48 tokens tell the whole reply.

Tastes, drawn in turn from:
- meaning (judged with the judge's vectors): on topic (message to reply),
  close to a hidden interest, formal against chatty, concise and on topic;
- form: lays out steps, asks back, talks about itself rather than the
  user, hedges;
- a mixture of one of each.
Each taste's utility is divided by its typical spread within a turn, so
that the user's noise (taste_family.NOISE) weighs alike for every kind,
and a small secondary preference on length breaks ties.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from taste_family import Pool, say, worker_pool

SEMANTIC = ("on_topic", "interest", "formal", "concise_on_topic")
FORM = ("steps", "asks_back", "about_itself", "hedges")
REAL_KINDS = (*SEMANTIC, *FORM, "mixture")
# A one-column taste: the policy has a feature that says it (list, question).
NAMED = ("steps", "asks_back")
INTERESTS = (
    "I love hiking, mountains and being outdoors.",
    "I work with computers and like programming.",
    "I care about money, budgets and saving.",
    "Food and cooking are my passion.",
    "I enjoy history and old civilisations.",
    "I like science and how things work.",
    "Music and playing instruments matter to me.",
    "Sport and fitness are a big part of my life.",
    "I love travelling and other cultures.",
    "I have pets and care about animals.",
    "Gardening and plants make me happy.",
    "I draw and paint, art is my thing.",
    "My family and my children come first.",
    "I read novels every evening.",
    "I care about health and medicine.",
    "I watch a lot of films and TV series.",
)
FORMAL = ("I would be pleased to assist you with this matter.",
          "Please find the relevant information outlined below.",
          "It is advisable to consider the following recommendations.")
CHATTY = ("Haha sure thing, no worries at all!",
          "Oh wow, that's so cool, let's do it!",
          "Yeah totally, I get you, been there lol.")
ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+[^\W\d_]{2,}\S*\s+[^\W\d_]{2,}",
                  re.MULTILINE)
HEDGES = re.compile(r"\b(?:might|may|perhaps|possibly|maybe|probably|could|generally|"
                    r"usually|often|it depends|not sure|i think|likely)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z']+")
_SELF = frozenset({"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"})
_USER = frozenset({"you", "your", "yours", "yourself", "you're", "you've", "you'd", "you'll"})


# the judge's vectors, in this process -------------------------------------
_VECTORS: dict[str, np.ndarray] = {}


def vectors() -> dict[str, np.ndarray]:
    return _VECTORS or worker_pool().judge


def _anchor(texts: tuple[str, ...]) -> np.ndarray:
    v = np.mean([vectors()[t] for t in texts], axis=0)
    return v / np.linalg.norm(v)


def _main(kind: str, arg: tuple, text: str, message: str) -> float:
    vec = vectors()
    if kind == "on_topic":
        return float(vec[text] @ vec[message])
    if kind == "interest":
        return float(vec[text] @ vec[arg[0]])
    if kind == "formal":
        return float(vec[text] @ (_anchor(FORMAL) - _anchor(CHATTY)))
    if kind == "concise_on_topic":
        return float(vec[text] @ vec[message]) - 0.3 * min(len(text.split()) / 60, 2.0)
    if kind == "steps":
        return float(min(len(ITEM.findall(text)), 6))
    if kind == "asks_back":
        return float(min(text.count("?"), 3))
    if kind == "about_itself":
        ws = [w.lower() for w in _WORD.findall(text)]
        return 10.0 * (sum(w in _SELF for w in ws) - sum(w in _USER for w in ws)) / max(len(ws), 1)
    if kind == "hedges":
        return float(min(len(HEDGES.findall(text)), 5))
    raise ValueError(kind)


@dataclass(frozen=True)
class RealTaste:
    name: str
    kind: str
    arg: tuple
    sign: float
    scale: float  # 1 / the typical spread within a turn
    tie: float
    named: bool
    parts: tuple = field(default=())  # a mixture's tastes

    @property
    def semantic(self) -> bool:
        return self.kind in SEMANTIC or (self.kind == "mixture")

    def main(self, text: str, message: str) -> float:
        if self.kind == "mixture":
            return sum(part.main(text, message) for part in self.parts)
        return self.sign * self.scale * _main(self.kind, self.arg, text, message)

    def utility(self, text: str, message: str = "") -> float:
        # Replies run to hundreds of characters: a tenth of the synthetic
        # family's length preference, a tie-break only.
        return self.main(text, message) + self.tie * len(text) / 3000.0


def _spread(kind: str, arg: tuple, turns: list[tuple[str, list[str]]]) -> float:
    """The mean standard deviation of a kind's value within a turn."""
    spreads = [np.std([_main(kind, arg, t, m) for t in texts]) for m, texts in turns]
    return float(np.mean(spreads)) or 1.0


def draw_real_tastes(count: int, pool: Pool, seed: int) -> list[RealTaste]:
    rng = np.random.default_rng([seed, 77])
    turns = [(m, [c.text for c in p.candidates]) for m, props in pool.proposals.items()
             for p in props]
    sample = [turns[int(i)] for i in rng.choice(len(turns), size=min(60, len(turns)),
                                                replace=False)]

    def one(kind: str, label: str) -> RealTaste:
        arg = (str(rng.choice(INTERESTS)),) if kind == "interest" else ()
        # On topic and concise are liked; the rest either way.
        sign = 1.0 if kind in ("on_topic", "concise_on_topic") or rng.random() < 0.5 else -1.0
        tie = float(rng.choice([-1.0, 1.0]))
        return RealTaste(f"{label}_{kind}{'-' if sign < 0 else ''}"
                         + (f":{arg[0][:24]}" if arg else ""), kind, arg, sign,
                         1.0 / _spread(kind, arg, sample), tie, kind in NAMED)

    tastes = []
    for i in range(count):
        kind = REAL_KINDS[i % len(REAL_KINDS)]
        if kind != "mixture":
            tastes.append(one(kind, f"{i:02d}"))
            continue
        a = one(str(rng.choice(SEMANTIC)), "a")
        b = one(str(rng.choice(FORM)), "b")
        tastes.append(RealTaste(f"{i:02d}_mixture:{a.name[2:]}+{b.name[2:]}", "mixture", (),
                                1.0, 1.0, a.tie, False, (a, b)))
    return tastes


# the pool ---------------------------------------------------------------------
@dataclass(frozen=True)
class RealPool(Pool):
    judge: dict = field(default_factory=dict)  # text -> the judge's vector
    embedded: dict = field(default_factory=dict)  # text -> the product's local: vector
    embedder: str = ""  # the product's embedder identity
    static: dict = field(default_factory=dict)  # text -> the static (distilled) vector
    static_embedder: str = ""


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rlchat"


def _local_part(task: tuple[str, list[str], int, int]) -> list[tuple[str, object]]:
    import torch

    from rlchat.learner.generator import Generator

    folder, messages, per_message, part = task
    torch.set_num_threads(1)
    generator = Generator.load(folder, seed=part)
    out = []
    for i, message in enumerate(messages):
        for j in range(per_message):
            generator.reseed(10_000 * part + 100 * i + j)
            out.append((message, generator.propose([], message, 8)))
        say(f"  part {part}: {i + 1}/{len(messages)} messages")
    return out


def _local_proposals(folder: Path, messages: list[str], per_message: int, jobs: int):
    import multiprocessing

    parts = [messages[i::jobs] for i in range(jobs)]
    with multiprocessing.get_context("spawn").Pool(jobs) as workers:
        done = workers.map(_local_part, [(str(folder), part, per_message, n)
                                         for n, part in enumerate(parts)])
    return [pair for part in done for pair in part]


def _served_proposals(gguf: Path, messages: list[str], per_message: int):
    from rlchat.learner.remote import RemoteGenerator
    from rlchat.testkit.servers import free_port, llama_server

    with tempfile.TemporaryDirectory() as tmp:
        server = llama_server(gguf, Path(tmp) / "llama.log", port=free_port(), parallel=8,
                              context=8 * 1024, alias="smol").start()
        try:
            remote = RemoteGenerator(server.base_url, "smol", seed=0, timeout=600)
            remote.connect()
            out = []
            for i, message in enumerate(messages):
                for j in range(per_message):
                    remote.reseed(100 * i + j)
                    out.append((message, remote.propose([], message, 8)))
                say(f"  served: {i + 1}/{len(messages)} messages")
            identity = remote.identity
            remote.close()
        finally:
            server.stop()
    return out, identity


def real_pool(kind: str, per_message: int, messages: list[str], jobs: int = 2) -> RealPool:
    """The real model's replies to `messages`, with both sets of vectors,
    sampled once and cached (by the GGUF file, the kind and the counts)."""
    from judge import Judge
    from real_model import real_files
    from static_embedder import StaticEmbedder

    from rlchat.learner.embeddings import SentenceEmbedder, packaged_model
    from rlchat.learner.generator.weights import resolve_dtype
    from rlchat.learner.model_files import file_sha256

    gguf, folder = real_files()
    # The replies follow the weights, the messages, the counts and, for
    # rlchat's own loop, the number format this CPU resolves "auto" to.
    digest = hashlib.sha256("\n".join(messages).encode()).hexdigest()[:8]
    fmt = resolve_dtype("auto") if kind == "local" else "gguf"
    path = _cache_dir() / (f"real-taste-pool-{kind}-{file_sha256(gguf)[:12]}-{fmt}-{digest}"
                           f"-{per_message}.pickle")
    if path.exists():
        with path.open("rb") as fh:
            pool = pickle.load(fh)
        _VECTORS.update(pool.judge)
        return pool
    say(f"sampling the {kind} pool once: {len(messages)} messages x {per_message} turns "
        f"of 8 replies (cached in {path})")
    if kind == "local":
        from rlchat.learner.generator import Generator

        pairs = _local_proposals(folder, messages, per_message, jobs)
        identity = Generator.load(str(folder)).identity
    else:
        pairs, identity = _served_proposals(gguf, messages, per_message)
    proposals: dict[str, list] = {m: [] for m in messages}
    for message, proposal in pairs:
        if proposal.candidates:
            proposals[message].append(proposal)
    texts = sorted({c.text for props in proposals.values() for p in props
                    for c in p.candidates} | set(messages) | set(INTERESTS) | set(FORMAL)
                   | set(CHATTY))
    say(f"embedding {len(texts)} texts: the judge's vectors and the product's")
    judge = Judge()
    judge.embed_all(texts)
    product = SentenceEmbedder(str(packaged_model()))
    static = StaticEmbedder(product, say)
    embedded, distilled = {}, {}
    for start in range(0, len(texts), 64):
        chunk = texts[start:start + 64]
        embedded.update(zip(chunk, product.embed(chunk), strict=True))
        distilled.update(zip(chunk, static.embed(chunk), strict=True))
    pool = RealPool({m: p for m, p in proposals.items() if p}, identity, judge.cache,
                    embedded, product.identity, distilled, static.identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as fh:
        pickle.dump(pool, fh)
    os.replace(fh.name, path)
    _VECTORS.update(pool.judge)
    return pool


class PoolEmbedder:
    """The product's `local:` vectors of the pool's texts, computed once:
    what SentenceEmbedder (or, `static`, StaticEmbedder) gives them,
    without running it each turn."""

    def __init__(self, pool: RealPool, static: bool = False) -> None:
        self.identity = pool.static_embedder if static else pool.embedder
        self.vectors = pool.static if static else pool.embedded

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.vstack([self.vectors[t] for t in texts])


if __name__ == "__main__":
    sys.exit("run benchmarks/tastes.py --real")
