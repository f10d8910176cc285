"""The simulated users of benchmarks/tastes.py and benchmarks/population_prior.py.

A taste is drawn from a wide space: a word liked or disliked, a property of
the characters, a band of lengths, a set of topic words, a punctuation
habit, the first or last character, the ratio of two letters, the number
of sentences, a set of disliked words, or a mixture of two of these.  Each
has a small secondary preference on length, so that every turn has a
favourite.  A taste is `named` when one feature column says it one to one
(a common word's own column, a letter's, the capitals', a mark's, "ends with
a question mark"); the others the policy has to put together.

The replies come from a pool the tiny GPT-2 (built like `rlchat
init-model`) sampled once for every message, in sessions of five turns
(cached on disk by the model's weights): the agent, its features, store and
policy are the real ones, and a turn costs milliseconds instead of the
second a sampling takes, so a family of hundreds of users runs in minutes.
The tiny model trains for a few seconds when it is built, so its weights,
and the pool, follow the CPU's floating-point kernels: another machine
samples another pool (the cache file is named by the weights).
A turn's replies do not depend on which reply the user picked before.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlchat.learner.agent import Agent
from rlchat.learner.features import CHARS, COMMON_WORDS, DIM, FEATURE_NAMES, V1_NAMES, words
from rlchat.learner.policy import PolicyConfig, QPolicy
from rlchat.learner.records import Turn
from rlchat.learner.sampling import Sampling
from rlchat.learner.settings import Settings
from rlchat.storage import Store

MESSAGES = [
    "what should I cook tonight?", "tell me a joke", "how do I fix a slow laptop?",
    "recommend a film please", "I feel nervous about my exam", "what book should I read?",
    "where should I travel this summer?", "why is the sky blue?", "good morning",
    "I lost my keys in the kitchen", "can you help me write an email?", "do you like music?",
    "I am tired today", "what is the weather like?", "give me a tip for sleeping better",
]
KINDS = ("word_liked", "word_disliked", "chars", "length_band", "topic", "punctuation",
         "first_char", "last_char", "letter_ratio", "sentences", "disliked_words", "mixture")
# A second family for the population prior only: one taste per named text
# feature (a population fitted on the kinds above alone would hold those
# columns tight, and a user who likes questions or politeness would pay).
FEATURE_KINDS = ("questions", "exclaims", "polite", "echo", "repetitive")
POLITE = frozenset({"please", "thanks", "thank", "sorry", "glad", "welcome", "kindly"})
NOISE = 0.05  # the user's noise on the utility when picking
SESSION_TURNS = 5
POOL_PER_MESSAGE = 40
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def first_char(text: str) -> str:
    stripped = text.strip()
    return stripped[0].lower() if stripped else ""


def last_char(text: str) -> str:
    stripped = text.strip()
    return stripped[-1].lower() if stripped else ""


def sentences(text: str) -> int:
    """Sentence ends, and a last sentence left open counts too."""
    stripped = text.strip()
    if not stripped:
        return 0
    ends = len(_SENTENCE_END.findall(stripped))
    return ends + (0 if stripped[-1] in ".!?" else 1)


@dataclass(frozen=True)
class Taste:
    name: str
    kind: str
    arg: tuple
    tie: float  # weight of the secondary length preference (signed)
    named: bool  # one feature column says it one to one
    parts: tuple = field(default=())  # a mixture's (taste, scale) pairs

    def main(self, text: str, message: str = "") -> float:
        kind, arg = self.kind, self.arg
        ws = words(text)
        if kind in FEATURE_KINDS:
            return arg[0] * _feature_taste(kind, text, ws, message)
        low = text.lower()
        if kind == "word_liked":
            return float(ws.count(arg[0]))
        if kind == "word_disliked":
            return -float(ws.count(arg[0]))
        if kind == "chars":
            what, sign = arg
            if what == "vowels":
                letters = [c for c in low if c.isalpha()]
                share = sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0
                return sign * 5.0 * share
            if what == "capitals":
                return sign * float(sum(c.isupper() for c in text))
            return sign * float(low.count(what))
        if kind == "length_band":
            lo, hi = arg
            n = len(text)
            return 0.0 if lo <= n <= hi else -min(abs(n - lo), abs(n - hi)) / 15.0
        if kind == "topic":
            return float(sum(w in arg for w in ws))
        if kind == "punctuation":
            mark, sign = arg
            return sign * float(text.count(mark))
        if kind == "first_char":
            return arg[1] * float(first_char(text) == arg[0])
        if kind == "last_char":
            return arg[1] * float(last_char(text) == arg[0])
        if kind == "letter_ratio":
            a, b = low.count(arg[0]), low.count(arg[1])
            return 3.0 * (a / (a + b) if a + b else 0.5)
        if kind == "sentences":
            return -float(abs(sentences(text) - arg[0]))
        if kind == "disliked_words":
            return -float(sum(w in arg for w in ws))
        return sum(scale * part.main(text, message) for part, scale in self.parts)  # mixture

    def utility(self, text: str, message: str = "") -> float:
        return self.main(text, message) + self.tie * len(text) / 300.0


def _feature_taste(kind: str, text: str, ws: list[str], message: str) -> float:
    if kind == "questions":
        return float("?" in text)
    if kind == "exclaims":
        return float("!" in text)
    if kind == "polite":
        return float(sum(w in POLITE for w in ws))
    if kind == "echo":
        mine = set(words(message))
        return 3.0 * sum(w in mine for w in ws) / len(ws) if ws else 0.0
    return 3.0 * (1.0 - len(set(ws)) / len(ws)) if ws else 0.0  # repetitive


@dataclass(frozen=True)
class Pool:
    """The tiny model's replies: for each message, proposals as sampled."""

    proposals: dict  # message -> list[Proposal]
    identity: dict

    def texts(self) -> list[str]:
        return [c.text for props in self.proposals.values() for p in props
                for c in p.candidates]


class PoolSource:
    """A candidate source (learner.candidate_source.CandidateSource) that serves
    the pool's proposals for a message, one drawn at random per turn."""

    def __init__(self, pool: Pool, seed: int) -> None:
        self.pool = pool
        self.sampling = Sampling()
        self.rng = np.random.default_rng([seed, 11])

    @property
    def identity(self) -> dict:
        return dict(self.pool.identity)

    def propose(self, history, message, n, *, system="", on_token=None, cancel=None):
        options = self.pool.proposals[message]
        return options[int(self.rng.integers(len(options)))]


# A scratch store in memory where there is one: the figures are the learner's,
# not the disk's.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


@dataclass
class Run:
    hits: list[bool]  # the first-ranked candidate was the pick
    chance: list[float]  # 1 / shown: a random order's expectation
    ceiling: list[bool]  # the true taste's first would have been the pick
    picks: list[int]
    stored: list  # the turns as stored
    policy: object  # the agent's policy at the end


def _v1_only(agent_cls: type) -> type:
    """The agent with the columns added since v1 held at zero: v1's features."""
    added = [i for i, name in enumerate(FEATURE_NAMES) if name not in V1_NAMES]

    class V1Agent(agent_cls):
        def _store_turn(self, text, proposal, phi):
            phi = phi.copy()
            phi[:, added] = 0.0
            return super()._store_turn(text, proposal, phi)

    return V1Agent


# The learner before the population prior: the ridge for every column to
# start from (`without_population`), and preferences at a probit scale of 0.1.
PREVIOUS = PolicyConfig(pair_margin=0.1)


def without_population(agent: Agent) -> None:
    """The agent's policy replaced by a new one that starts from the ridge
    for every column (the population prior left out)."""
    agent.conversation.policy = QPolicy(DIM, agent.policy.config)


def drive(taste, pool: Pool, seed: int, turns: int, *, population: bool = True,
          v1: bool = False, order: bool = False, config=None, embeddings=None,
          settings: Settings | None = None) -> Run:
    """One simulated user through the real agent and store: each turn it picks
    the best shown candidate by its taste (noise NOISE), rates it 5 if it is
    the best shown and 3 otherwise (`order`: and orders all shown); a session
    ends every SESSION_TURNS turns.  `population` off: the policy starts from
    the ridge for every column.  `embeddings`: a fixed source of the meaning
    columns (learner/embeddings.py); `settings`: the chat's, 4 shown of 8 by
    default.  `taste` is anything with utility(text, message)."""
    messages = list(pool.proposals)
    rng = np.random.default_rng([seed, 7])
    agent_cls = _v1_only(Agent) if v1 else Agent
    hits, chance, ceiling, picks = [], [], [], []
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        agent = agent_cls(Store(tmp), PoolSource(pool, seed),
                          settings or Settings(candidates=4, samples=8),
                          policy_config=config, seed=seed, embeddings=embeddings)
        if not population:
            without_population(agent)
        for t in range(turns):
            message = messages[int(rng.integers(len(messages)))]
            view = agent.say(message)
            u = np.array([taste.utility(c.text, message) for c in view.candidates])
            noisy = u + rng.normal(0, NOISE, len(u))
            pick = int(np.argmax(noisy))
            hits.append(pick == 0)
            ceiling.append(pick == int(np.argmax(u)))
            picks.append(pick)
            chance.append(1.0 / len(view.candidates))
            rating = 5 if u[pick] >= u.max() else 3
            ids = [c.id for c in view.candidates]
            ranked = [ids[i] for i in np.argsort(-noisy, kind="stable")]
            agent.choose(view.turn, ids[pick], rating, order=ranked if order else None)
            if t % SESSION_TURNS == SESSION_TURNS - 1:
                agent.end()
        stored = [Turn.from_dict(record) for record in agent.store.turns()]
        agent.store.close()
    return Run(hits, chance, ceiling, picks, stored, agent.policy)


_WORKER_POOL: Pool | None = None


def _hold(pool: Pool) -> None:
    global _WORKER_POOL
    _WORKER_POOL = pool


def worker_pool() -> Pool:
    """The reply pool, in a process that run_users started."""
    assert _WORKER_POOL is not None, "only in a process run_users started"
    return _WORKER_POOL


def run_users(pool: Pool, work: Callable, tasks: list, jobs: int, what: str) -> Iterator:
    """work(task) for every task on `jobs` processes that hold the pool
    (worker_pool()), the results as they come, with progress every 20."""
    start = time.time()
    # spawn: a forked child would inherit the parent's torch thread locks.
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(jobs, initializer=_hold, initargs=(pool,)) as workers:
        for n, result in enumerate(workers.imap_unordered(work, tasks, chunksize=4), start=1):
            if n % 20 == 0 or n == len(tasks):
                say(f"  {n}/{len(tasks)} {what} ({time.time() - start:.0f} s)")
            yield result


# drawing tastes ---------------------------------------------------------------
def vocabulary(texts: list[str]) -> list[str]:
    """Words the model says in 3-30 % of its replies (a liked word that it
    never says would be no taste at all)."""
    seen: Counter = Counter()
    for text in texts:
        seen.update(set(words(text)))
    return sorted(w for w, n in seen.items() if 0.03 <= n / len(texts) <= 0.30 and len(w) > 1)


def _common(values: list[str], low: float = 0.05, high: float = 0.5) -> list[str]:
    """The values seen in low-high of the cases: a taste that tells replies apart."""
    counts = Counter(values)
    return sorted(v for v, n in counts.items() if v and low <= n / len(values) <= high)


def _is_named(kind: str, arg: tuple) -> bool:
    if kind in ("word_liked", "word_disliked"):
        return arg[0] in COMMON_WORDS
    if kind == "chars":
        return arg[0] != "vowels"
    if kind == "punctuation":
        return arg[0] in CHARS
    if kind == "last_char":
        return arg[0] in ".?!"  # ends_period, ends_question, ends_exclaim
    return kind in FEATURE_KINDS


def _draw_one(kind: str, rng: np.random.Generator, texts: list[str], vocab: list[str],
              sign: int) -> tuple:
    if kind in ("word_liked", "word_disliked"):
        return (str(rng.choice(vocab)),)
    if kind == "chars":
        return (str(rng.choice(["vowels", "capitals", *"etaoinshrdlu"])), sign)
    if kind == "length_band":
        lo = int(rng.integers(10, 90))
        return (lo, lo + int(rng.integers(15, 40)))
    if kind in ("topic", "disliked_words"):
        return tuple(str(w) for w in rng.choice(vocab, size=5, replace=False))
    if kind == "punctuation":
        return (str(rng.choice([",", ".", "?", "!", "'"])), sign)
    if kind == "first_char":
        return (str(rng.choice(_common([first_char(t) for t in texts]))), sign)
    if kind == "last_char":
        return (str(rng.choice(_common([last_char(t) for t in texts]))), sign)
    if kind == "letter_ratio":
        a, b = rng.choice(list("etaoinshrdlu"), size=2, replace=False)
        return (str(a), str(b))
    if kind == "sentences":
        return (int(rng.integers(1, 4)),)
    if kind in FEATURE_KINDS:
        return (sign,)
    raise ValueError(kind)


def draw_tastes(count: int, texts: list[str], seed: int,
                kinds: tuple[str, ...] = KINDS) -> list[Taste]:
    """`count` tastes, the kinds in turn, their parameters at random.
    `texts` are the model's replies (what the tastes are drawn to tell apart)."""
    vocab = vocabulary(texts)
    rng = np.random.default_rng([seed, 99])
    sample = [texts[int(i)] for i in rng.choice(len(texts), size=min(2000, len(texts)),
                                                replace=False)]
    base_kinds = [k for k in KINDS if k != "mixture"]
    tastes = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        sign = 1 if rng.random() < 0.5 else -1
        tie = float(rng.choice([-1.0, 1.0]))
        if kind == "mixture":
            chosen = rng.choice(len(base_kinds), size=2, replace=False)
            parts = []
            for k in chosen:
                part_kind = base_kinds[int(k)]
                part_sign = 1 if rng.random() < 0.5 else -1
                part_arg = _draw_one(part_kind, rng, sample, vocab, part_sign)
                part = Taste(part_kind, part_kind, part_arg, 0.0, False)
                spread = float(np.std([part.main(t) for t in sample]))
                parts.append((part, 1.0 / spread if spread > 1e-9 else 1.0))
            arg = tuple(f"{p.kind}:{'/'.join(map(str, p.arg))}" for p, _ in parts)
            tastes.append(Taste(f"{i:02d}_mixture:{'+'.join(arg)}", kind, arg, tie, False,
                                tuple(parts)))
            continue
        arg = _draw_one(kind, rng, sample, vocab, sign)
        tastes.append(Taste(f"{i:02d}_{kind}:{'/'.join(map(str, arg))}", kind, arg, tie,
                            _is_named(kind, arg)))
    return tastes


# the pool ---------------------------------------------------------------------
def _pool_part(task: tuple[str, str, int, int]) -> list[tuple[str, object]]:
    """Sessions of SESSION_TURNS turns, random messages; the first reply continues."""
    import torch

    from rlchat.learner.generator import Generator

    model_dir, dtype, seed, sessions = task
    torch.set_num_threads(1)
    generator = Generator.load(model_dir, dtype=dtype, seed=seed)
    rng = np.random.default_rng([seed, 5])
    out = []
    for _ in range(sessions):
        history: list[tuple[str, str]] = []
        for _ in range(SESSION_TURNS):
            message = MESSAGES[int(rng.integers(len(MESSAGES)))]
            proposal = generator.propose(history, message, 8)
            if proposal.candidates:
                out.append((message, proposal))
                history.append((message, proposal.candidates[0].text))
    return out


def _fingerprint(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def reply_pool(dtype: str = "auto", jobs: int = 2, per_message: int = POOL_PER_MESSAGE) -> Pool:
    """The tiny model's replies to MESSAGES, sampled once and cached under
    ~/.cache/rlchat (by the model's weights and the number format)."""
    from rlchat.learner.generator import Generator
    from rlchat.learner.generator.weights import resolve_dtype
    from rlchat.learner.tiny_model import write_tiny_model

    model_dir = Path(tempfile.mkdtemp())
    say("building the tiny model (as `rlchat init-model`)")
    write_tiny_model(model_dir)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rlchat"
    # The format as this CPU resolves it: "auto" is qint8 on one machine and
    # float32 on another, and a pool sampled in one is not the other's.
    key = f"{_fingerprint(model_dir)}-{resolve_dtype(dtype)}-{per_message}"
    path = cache / f"taste-pool-{key}.pickle"
    if path.exists():
        with path.open("rb") as fh:
            return Pool(*pickle.load(fh))
    identity = Generator.load(str(model_dir), dtype=dtype).identity
    sessions = per_message * len(MESSAGES) // SESSION_TURNS
    say(f"sampling the reply pool once: {sessions * SESSION_TURNS} turns of 8 replies "
        f"on {jobs} processes (cached in {path})")
    tasks = [(str(model_dir), dtype, 1000 + part, sessions // jobs + 1) for part in range(jobs)]
    proposals: dict[str, list] = {m: [] for m in MESSAGES}
    # spawn: a forked child would inherit the parent's torch thread locks.
    with multiprocessing.get_context("spawn").Pool(jobs) as workers:
        for part in workers.imap_unordered(_pool_part, tasks):
            for message, proposal in part:
                proposals[message].append(proposal)
            say(f"  {sum(map(len, proposals.values()))} turns sampled")
    pool = Pool(proposals, identity)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, delete=False) as fh:
        pickle.dump((pool.proposals, pool.identity), fh)
    os.replace(fh.name, path)
    return pool
