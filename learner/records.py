"""Plain records of one turn, converted to and from JSON in this one place."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PENDING, CHOSEN, REPLIED, UNANSWERED = "pending", "chosen", "replied", "unanswered"
# Closed by asking for new candidates: "none of these", or a plain regenerate.
REJECTED, REGENERATED = "rejected", "regenerated"
LEARNED = (CHOSEN, REPLIED, REJECTED, REGENERATED)  # the statuses that carry feedback


@dataclass
class Candidate:
    """One sampled reply and the raw signals the generator measured for it."""

    text: str
    logprob: float | None  # mean token log-probability under the model (None: not known)
    tokens: int
    hidden: np.ndarray | None  # pooled last-layer hidden state (None: a served model)
    truncated: bool = False  # cut at max_new_tokens, its turn had not ended
    sampled: str | None = None  # the text as drawn, leading space included
    token_ids: list[int] | None = None  # the tokens drawn, up to the end of the turn


@dataclass
class Proposal:
    """What the generator returns for one user message."""

    candidates: list[Candidate]
    context_hidden: np.ndarray | None  # pooled hidden state of the prompt (None: served)
    prompt: str = ""  # the prompt as the model saw it (special tokens included)
    generator: dict[str, str] | None = None  # model, format, dtype
    # The chat messages sent to a server that cannot render its prompt (else None).
    messages: list[dict[str, str]] | None = None
    notice: str | None = None  # a sentence for the user about this draw (a warning)


@dataclass
class StoredCandidate:
    text: str
    logprob: float | None  # None where the generator gave no log-probs
    tokens: int
    features: list[float]
    truncated: bool = False
    sampled: str | None = None  # as drawn, leading space included (None: not recorded)
    token_ids: list[int] | None = None

    def __post_init__(self) -> None:
        # Stores written before served answers were checked may hold a log-prob
        # that is no finite number: it reads as absent, as it is now stored.
        if self.logprob is not None and not math.isfinite(self.logprob):
            self.logprob = None


@dataclass
class Turn:
    """One turn as stored: everything needed to replay or evaluate it."""

    session: str
    user_text: str
    candidates: list[StoredCandidate]
    feature_version: str
    scores: list[float]  # Q of every candidate when it was ranked
    order: list[int]  # every candidate index, best first as shown
    shown_count: int  # how many of `order` were shown
    propensities: list[float]  # P(candidate placed first), by candidate index
    policy_version: int
    created: float
    status: str = PENDING
    choice: int | None = None  # candidate index the user picked
    rating: int | None = None
    own_reply: str | None = None
    rewards: list[float] | None = None  # by shown position
    weights: list[float] | None = None  # by shown position: how likely it was read
    answered: float | None = None
    temperature: float | None = None  # exploration temperature when ranked
    ranking: list[list[int]] | None = None  # an order of the shown ids, best first, ties grouped
    edit: str | None = None  # the user's edit of the pick: the reply that continued
    edit_features: list[float] | None = None  # phi of the edit (features.text_row)
    prompt: str | None = None  # the prompt the model continued (None: not recorded)
    system: str = ""  # the session's system prompt when the turn was taken
    generator: dict[str, str] | None = None  # model, format, dtype (None: not recorded)
    # The messages a served model was sent, where its rendered prompt is not known.
    messages: list[dict[str, str]] | None = None
    # Candidates marked good or bad without a pick, in the order given:
    # {"id", "good", "reward", "late"}; late: given after the turn's answer.
    thumbs: list[dict[str, Any]] | None = None
    seq: int = 0
    id: str = ""

    @property
    def shown_ids(self) -> list[int]:
        return self.order[: self.shown_count]

    @property
    def answered_ok(self) -> bool:
        return self.status in LEARNED

    def features(self) -> np.ndarray:
        # Built once: live learning and replay ask for it at every step of
        # the turn.  Records are replaced, not edited (dataclasses.replace),
        # so the array cannot go stale.
        cached = self.__dict__.get("_features")
        if cached is None or len(cached) != len(self.candidates):
            cached = np.array([c.features for c in self.candidates], dtype=np.float64)
            self.__dict__["_features"] = cached
        return cached

    def thumbs_given(self, late: bool) -> list[tuple[int, float]]:
        """(candidate id, reward) of the thumbs given before the turn's answer,
        or with `late` after it."""
        return [(t["id"], t["reward"]) for t in self.thumbs or () if t["late"] == late]

    def reply_text(self) -> str | None:
        """What continued the conversation: the picked candidate or the user's own reply."""
        if self.status == CHOSEN and self.choice is not None:
            return self.edit if self.edit is not None else self.candidates[self.choice].text
        if self.status == REPLIED:
            return self.own_reply
        return None

    def to_dict(self) -> dict[str, Any]:
        """The whole turn as plain data, features inline; seq and id belong to
        the store, which assigns them."""
        data = asdict(self)
        del data["seq"], data["id"]
        return data

    def to_record(self) -> tuple[dict[str, Any], bytes]:
        """The stored form: the turn without its candidates' features, and
        the features as one matrix of little-endian float64 (exact), stored
        once beside the record so that its later updates stay small."""
        data = self.to_dict()
        for cand in data["candidates"]:
            del cand["features"]
        matrix = np.ascontiguousarray(self.features(), dtype="<f8")
        data["feature_dim"] = int(matrix.shape[1]) if matrix.ndim == 2 else 0
        return data, matrix.tobytes()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        """A turn from `to_dict`'s form, or from the store's (its features
        under "blob", as bytes)."""
        fields = dict(data)
        blob = fields.pop("blob", None)
        dim = fields.pop("feature_dim", None)
        matrix = None
        if dim is not None:
            if not isinstance(blob, bytes | bytearray):
                raise ValueError("the turn's features cannot be read back")
            matrix = np.frombuffer(blob, dtype="<f8").reshape(len(data["candidates"]), dim)
            fields["candidates"] = [StoredCandidate(**c, features=row.tolist())
                                    for c, row in zip(data["candidates"], matrix, strict=True)]
        else:
            fields["candidates"] = [StoredCandidate(**c) for c in data["candidates"]]
        for key in ("scores", "order", "propensities"):
            fields[key] = list(data[key])
        for key in ("rewards", "weights", "edit_features"):
            fields[key] = list(data[key]) if data.get(key) is not None else None
        if data.get("ranking") is not None:
            fields["ranking"] = [list(group) for group in data["ranking"]]
        if data.get("thumbs") is not None:
            fields["thumbs"] = [dict(thumb) for thumb in data["thumbs"]]
        turn = cls(**fields)
        if matrix is not None:
            turn.__dict__["_features"] = matrix.astype(np.float64)  # a copy, writable
        return turn


def new_turn(
    session: str, text: str, proposal: Proposal, phi: np.ndarray, *,
    feature_version: str, policy_version: int, system: str = "",
) -> Turn:
    """A turn for a message and its candidates, before the policy ranks them."""
    return Turn(
        session=session,
        user_text=text,
        candidates=[
            StoredCandidate(c.text, c.logprob, c.tokens, [float(x) for x in row],
                            c.truncated, c.sampled, c.token_ids)
            for c, row in zip(proposal.candidates, phi, strict=True)
        ],
        feature_version=feature_version,
        scores=[],
        order=[],
        shown_count=0,
        propensities=[],
        policy_version=policy_version,
        created=time.time(),
        prompt=proposal.prompt or None,
        system=system,
        generator=proposal.generator,
        messages=proposal.messages,
    )
