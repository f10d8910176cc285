"""Named, versioned features phi(s, a) of a (context, candidate) pair.

Every feature is scaled to roughly [-1, 1] by construction so that a single
ridge penalty suits all of them.  Stored turns carry FEATURE_VERSION: change
it whenever the names or their computation change, and say in `refeaturize`
how an older turn becomes a current one.

Three kinds of columns:
- named text features (length, question, politeness, ...): the tastes
  someone thought of;
- general ones, so that the policy can learn a taste nobody named: the
  length in bands, the shape of the text (digits, capitals, lists, code,
  how it ends), what it shares with the user's message, how often each
  character occurs, and the words of the reply: the commonest English
  words each in a column of its own, every other word hashed into a few
  shared ones;
- the model's numbers (log-probability, similarity to the context and a
  fixed projection of the hidden state), the same as in v1.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import replace
from functools import lru_cache

import numpy as np

from rlchat.learner.records import Candidate, Turn

FEATURE_VERSION = "v3"
HIDDEN_DIMS = 8
# The hidden-state projection is random, so its columns are mostly noise for
# any one taste: they are scaled down, a stronger prior, and count where the
# data says so.
HIDDEN_SCALE = 0.25
# A word's own column, for the words replies are made of: the 100 commonest
# lemmas of English (the Oxford English Corpus list), with the forms of
# "be", "have" and "do".  General English, not any one model's or user's.
# Hashed words share columns, and a shared column can only learn what its
# words have in common: the words replies are made of get their own, and
# only the rest are hashed (benchmarks/tastes.py's linear fit measures what
# the columns can express).
COMMON_WORDS = (
    "the", "be", "is", "are", "was", "were", "am", "been", "to", "of", "and", "a", "in",
    "that", "have", "has", "had", "i", "it", "for", "not", "on", "with", "he", "as", "you",
    "do", "does", "did", "at", "this", "but", "his", "by", "from", "they", "we", "say",
    "her", "she", "or", "an", "will", "my", "one", "all", "would", "there", "their", "what",
    "so", "up", "out", "if", "about", "who", "get", "which", "go", "me", "when", "make",
    "can", "like", "time", "no", "just", "him", "know", "take", "people", "into", "year",
    "your", "good", "some", "could", "them", "see", "other", "than", "then", "now", "look",
    "only", "come", "its", "over", "think", "also", "back", "after", "use", "two", "how",
    "our", "work", "first", "well", "way", "even", "new", "want", "because", "any", "these",
    "give", "day", "most", "us",
)
WORD_BUCKETS = 16  # for every other word
LENGTH_BANDS = (12, 24, 36, 50, 65, 80, 100, 130)  # characters: nine bands
CHARS = "abcdefghijklmnopqrstuvwxyz0.,?!'\":;-"  # "0" stands for every digit

NAMED = ("bias", "length", "logprob", "repetition", "overlap", "question", "exclaim",
         "punctuation", "polite")
MODEL = ("similarity", *(f"hidden_{i}" for i in range(HIDDEN_DIMS)))
SHAPE = (
    *(f"length_band_{i}" for i in range(len(LENGTH_BANDS) + 1)),
    "digits", "capitals", "non_ascii", "list", "code", "lines", "colon",
    "quote", "ends_period", "ends_question", "ends_exclaim",
)
SHARED = ("recall", "shared_pairs", "shared_first")
CHAR_NAMES = tuple(f"char_{c}" for c in CHARS)
WORDS = (*(f"word_{w}" for w in COMMON_WORDS), *(f"word_hashed_{i}" for i in range(WORD_BUCKETS)))

FEATURE_NAMES: tuple[str, ...] = (*NAMED, *MODEL, *SHAPE, *SHARED, *CHAR_NAMES, *WORDS)
DIM = len(FEATURE_NAMES)
# Each version's columns begin with v1's 18, in the same order: an older
# turn's model columns carry over as stored (`refeaturize`).
V1_NAMES: tuple[str, ...] = (*NAMED, *MODEL)
V2_NAMES: tuple[str, ...] = (
    *NAMED, *MODEL, *SHAPE, *SHARED, *CHAR_NAMES, *(f"word_{i}" for i in range(64)))
NAMES_BY_VERSION = {"v1": V1_NAMES, "v2": V2_NAMES, FEATURE_VERSION: FEATURE_NAMES}
# The features the generator's numbers make (the rest are read off the text):
# they change meaning when the model changes (learner/update.py).
MODEL_COLUMNS = [i for i, name in enumerate(FEATURE_NAMES)
                 if name in ("logprob", "similarity") or name.startswith("hidden_")]
# Of those, the ones the embeddings source fills (learner/embeddings.py): the
# similarity of message and reply, and the projection of the reply's vector.
MEANING_COLUMNS = [i for i in MODEL_COLUMNS if FEATURE_NAMES[i] != "logprob"]
_MODEL_SLICE = slice(len(NAMED), len(NAMED) + len(MODEL))

_WORD = re.compile(r"[A-Za-z0-9']+")
_POLITE = frozenset({"please", "thanks", "thank", "sorry", "glad", "welcome", "kindly"})
_PUNCT = frozenset(".,;:!?-\"'()")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s", re.MULTILINE)
_CODE = re.compile(r"`|^(?: {4}|\t)\S", re.MULTILINE)
# Per occurrence, a word or a character counts this much in its column (at
# most 2).  Small on purpose: under the ridge every column's prior starts
# from, a column's scale is its prior, and the many word and character
# columns must not drown the named ones in noise before the data asks for
# them.  Chosen on benchmarks/tastes.py's random tastes (CHANGELOG.md has
# the figures).
_WORD_SCALE = 0.1
_CHAR_SCALE = 0.05
_MARK_SCALE = 0.25  # punctuation marks: few in a reply, and each one tells
_LETTERS = sum(c.isalnum() for c in CHARS)
_CHAR_INDEX = {c: i for i, c in enumerate(CHARS)}
_WORD_INDEX = {w: i for i, w in enumerate(COMMON_WORDS)}


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


@lru_cache(maxsize=8)
def _projection(hidden_size: int) -> np.ndarray:
    # Fixed across runs (seeded by the width alone) so features stay comparable.
    rng = np.random.default_rng(20240 + hidden_size)
    return rng.standard_normal((HIDDEN_DIMS, hidden_size))


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-12 else np.zeros_like(v)


@lru_cache(maxsize=65536)
def _bucket(item: str, buckets: int) -> tuple[int, float]:
    """A stable bucket and sign for an item (Python's own hash is salted)."""
    h = zlib.crc32(item.encode("utf-8", "surrogatepass"))
    return h % buckets, 1.0 if (h >> 16) & 1 else -1.0


def _capped(values: list[float], scale: float) -> list[float]:
    return [max(-2.0, min(2.0, v * scale)) for v in values]


def _named(user_words: set[str], text: str, cand_words: list[str],
           logprob: float | None) -> list[float]:
    n = len(cand_words)
    length = math.log1p(len(text)) / math.log1p(200.0)  # 200 chars -> 1
    repetition = 1.0 - len(set(cand_words)) / n if n else 0.0
    overlap = sum(w in user_words for w in cand_words) / n if n else 0.0
    punct = sum(ch in _PUNCT for ch in text) / max(len(text), 1)
    polite = min(sum(w in _POLITE for w in cand_words), 2) / 2.0
    return [
        1.0,
        min(length, 2.0) * 2.0 - 1.0,
        # Absent (0) where the generator gave no log-probs: never invented.
        0.0 if logprob is None else float(np.clip((logprob + 4.0) / 4.0, -2.0, 2.0)),
        repetition,
        overlap,
        1.0 if "?" in text else 0.0,
        1.0 if "!" in text else 0.0,
        min(punct * 5.0, 1.0),
        polite,
    ]


def _shape(text: str) -> list[float]:
    stripped = text.rstrip()
    band = sum(len(text) >= edge for edge in LENGTH_BANDS)
    letters = [ch for ch in text if ch.isalpha()]
    last = stripped[-1:] if stripped else ""
    return [
        *(1.0 if i == band else 0.0 for i in range(len(LENGTH_BANDS) + 1)),
        min(sum(ch.isdigit() for ch in text) / 3.0, 1.0),
        sum(ch.isupper() for ch in letters) / len(letters) if letters else 0.0,
        1.0 if any(ord(ch) > 0x7F for ch in text) else 0.0,
        1.0 if _LIST_LINE.search(text) else 0.0,
        1.0 if _CODE.search(text) else 0.0,
        min(text.count("\n"), 3) / 3.0,
        1.0 if (":" in text or ";" in text) else 0.0,
        1.0 if '"' in text else 0.0,
        1.0 if last == "." else 0.0,
        1.0 if last == "?" else 0.0,
        1.0 if last == "!" else 0.0,
    ]


def _pairs(ws: list[str]) -> list[str]:
    return [f"{a} {b}" for a, b in zip(ws, ws[1:], strict=False)]


def _shared(user_words: list[str], cand_words: list[str]) -> list[float]:
    content = {w for w in user_words if len(w) >= 4}
    mine = set(cand_words)
    recall = sum(w in mine for w in content) / len(content) if content else 0.0
    cand_pairs = _pairs(cand_words)
    user_pairs = set(_pairs(user_words))
    shared = sum(p in user_pairs for p in cand_pairs) / len(cand_pairs) if cand_pairs else 0.0
    first = 1.0 if cand_words and cand_words[0] in set(user_words) else 0.0
    return [recall, shared, first]


def _lexical(text: str, cand_words: list[str]) -> list[float]:
    """How often each character occurs, and each word: a common one in its
    own column, any other hashed with a sign into WORD_BUCKETS columns (a
    collision adds noise, not a bias)."""
    chars = [0.0] * len(CHARS)
    for ch in text.lower():
        index = _CHAR_INDEX.get("0" if ch.isdigit() else ch)
        if index is not None:
            chars[index] += 1.0
    counts = [0.0] * (len(COMMON_WORDS) + WORD_BUCKETS)
    for w in cand_words:
        own = _WORD_INDEX.get(w)
        if own is not None:
            counts[own] += 1.0
        else:
            index, sign = _bucket(w, WORD_BUCKETS)
            counts[len(COMMON_WORDS) + index] += sign
    return (_capped(chars[:_LETTERS], _CHAR_SCALE) + _capped(chars[_LETTERS:], _MARK_SCALE)
            + _capped(counts, _WORD_SCALE))


def text_features(user_text: str, text: str,
                  logprob: float | None) -> tuple[list[float], list[float]]:
    """The columns read off the text (no hidden state): the named ones, and
    the general ones that follow the model columns."""
    user_words = words(user_text)
    cand_words = words(text)
    named = _named(set(user_words), text, cand_words, logprob)
    general = _shape(text) + _shared(user_words, cand_words) + _lexical(text, cand_words)
    return named, general


def _row(user_text: str, text: str, logprob: float | None, model: list[float]) -> list[float]:
    named, general = text_features(user_text, text, logprob)
    return named + model + general


def featurize(
    user_text: str, context_hidden: np.ndarray | None, candidates: list[Candidate]
) -> np.ndarray:
    """phi for every candidate, shape (len(candidates), DIM), float64.

    Without hidden states (a served model) the model columns are 0: a
    column that is 0 in every row is never learned, so it stays absent."""
    if context_hidden is None or any(c.hidden is None for c in candidates):
        absent = [0.0] * len(MODEL)
        rows = [_row(user_text, c.text, c.logprob, absent) for c in candidates]
        return _clean(np.array(rows, dtype=np.float64).reshape(len(candidates), DIM))
    rows = []
    context = np.asarray(context_hidden, dtype=np.float64)
    ctx_unit = _unit(context)
    proj = _projection(context.shape[-1])
    for cand in candidates:
        hidden = np.asarray(cand.hidden, dtype=np.float64)
        similarity = float(_unit(hidden) @ ctx_unit)
        # The difference from the context removes the large shared components
        # of transformer states, leaving what is specific to this reply.
        direction = proj @ _unit(hidden - context)
        model = [similarity, *(np.clip(direction, -3.0, 3.0) / 3.0 * HIDDEN_SCALE)]
        rows.append(_row(user_text, cand.text, cand.logprob, [float(x) for x in model]))
    return _clean(np.array(rows, dtype=np.float64).reshape(len(candidates), DIM))


def text_row(user_text: str, text: str, model_from: list[float]) -> list[float]:
    """phi of a text the model did not sample (the user's edit of a pick):
    its text columns, and the model columns (log-prob included) of the
    candidate it was made from."""
    row = np.asarray(model_from, dtype=np.float64)
    named, general = text_features(user_text, text, 0.0)
    named[2] = float(row[2])  # the log-prob column, as scaled
    out = named + [float(x) for x in row[_MODEL_SLICE]] + general
    return [float(x) for x in _clean(np.array(out, dtype=np.float64))]


def refeaturize(turn: Turn) -> Turn:
    """The turn with its candidates' features in today's version, where the
    stored texts allow it; otherwise unchanged (and not learnable).

    v1 and v2 -> v3 is exact without the model: every version computes v1's
    columns the same way, and today's keeps an older turn's model columns
    (log-prob, similarity, hidden projection) as stored (v1's projection
    times HIDDEN_SCALE) and reads the rest off the stored texts."""
    old = NAMES_BY_VERSION.get(turn.feature_version)
    if turn.feature_version == FEATURE_VERSION or old is None or not turn.candidates:
        return turn
    scale = HIDDEN_SCALE if turn.feature_version == "v1" else 1.0  # v1 stored it unscaled
    candidates = []
    for cand in turn.candidates:
        if len(cand.features) != len(old):
            return turn
        stored = cand.features[_MODEL_SLICE]
        model = [float(stored[0])] + [float(x) * scale for x in stored[1:]]
        named, general = text_features(turn.user_text, cand.text, cand.logprob)
        row = _clean(np.array(named + model + general, dtype=np.float64))
        row[: len(NAMED)] = cand.features[: len(NAMED)]  # the named columns, bit for bit
        candidates.append(replace(cand, features=[float(x) for x in row]))
    edit_features = turn.edit_features
    if edit_features is not None and turn.edit is not None:  # its model columns as stored
        edit_features = text_row(turn.user_text, turn.edit, edit_features)
    return replace(turn, candidates=candidates, feature_version=FEATURE_VERSION,
                   edit_features=edit_features)


def _clean(phi: np.ndarray) -> np.ndarray:
    return np.nan_to_num(phi, nan=0.0, posinf=0.0, neginf=0.0)
