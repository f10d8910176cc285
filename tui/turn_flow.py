"""The chat's turn flow as a plain state machine, testable without a terminal.

    LOADING ─▶ TYPING ─send─▶ GENERATING ─generated─▶ CHOOSING ─pick─▶ RATING
                  ▲               │ stopped    ▲         │  ▲  own       │ rate
                  └───────────────┘            │again    ▼  │ back       ▼
                  ▲                            └─── REPLYING ─submit─▶ LEARNING
                  └──────────────────────── answered ◀──────────────────┘

ORDERING (several ranked, best first) and EDITING (the pick changed before
it is accepted) sit between CHOOSING and RATING: submitted, they go on to
the rating like a pick; Esc goes back.  CONTINUING (the model goes on with a
candidate cut at the token limit) comes back to CHOOSING, Esc cancelling.
"Again" (regenerate, or "none of these") leaves CHOOSING for GENERATING with
the same message.

The App maps keys to these calls and renders the phase; which actions a phase
allows is written once, in ALLOWED.  A call in the wrong phase raises
FlowError: that is a bug in the caller, never the user's doing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlchat.learner.agent import ShownCandidate, TurnView


class Phase(Enum):
    LOADING = "loading"  # the model loads; sessions and curves can be browsed
    BROKEN = "broken"  # the model could not be loaded
    TYPING = "typing"
    GENERATING = "generating"
    CHOOSING = "choosing"
    RATING = "rating"  # a candidate is picked, its rating is asked
    REPLYING = "replying"  # the user writes their own reply
    ORDERING = "ordering"  # the user types an order of the candidates
    EDITING = "editing"  # the user edits the highlighted candidate
    CONTINUING = "continuing"  # a cut candidate is being continued by the model
    LEARNING = "learning"  # the answer is being stored and learned


CHOICE = (Phase.CHOOSING, Phase.RATING)
# The actions that only some phases allow; the others are always on.
ALLOWED: dict[str, tuple[Phase, ...]] = {
    "digit": CHOICE,
    "move": (Phase.CHOOSING,),
    "pick_highlighted": (Phase.CHOOSING,),
    "skip_rating": (Phase.RATING,),
    "cancel": (Phase.GENERATING, Phase.CONTINUING),
    "continue_reply": (Phase.CHOOSING,),
    "cancel_reply": (Phase.REPLYING, Phase.ORDERING, Phase.EDITING),
    "own_reply": CHOICE,
    "order": (Phase.CHOOSING,),
    "edit": (Phase.CHOOSING,),
    "regenerate": CHOICE,
    "none": CHOICE,
    "toggle_why": CHOICE,
    "toggle_expand": CHOICE,
    "thumb": (Phase.CHOOSING,),
    "new_session": (Phase.TYPING, *CHOICE, Phase.BROKEN),
    "submit": (Phase.TYPING, Phase.REPLYING, Phase.ORDERING, Phase.EDITING),
    "resume": (Phase.TYPING, *CHOICE),
    "system_prompt": (Phase.TYPING, *CHOICE, Phase.BROKEN),
}


class FlowError(RuntimeError):
    """A transition asked for in a phase that does not allow it."""


@dataclass
class TurnFlow:
    phase: Phase = Phase.LOADING
    message: str | None = None  # the message of the turn in progress
    view: TurnView | None = None  # its candidates, once generated
    picked: ShownCandidate | None = None  # the pick awaiting its rating
    order: list[list[int]] | None = None  # candidate ids, best first, ties grouped
    edit: str | None = None  # the pick as the user edited it

    def allows(self, action: str) -> bool:
        phases = ALLOWED.get(action)
        return phases is None or self.phase in phases

    def _expect(self, *phases: Phase) -> None:
        if self.phase not in phases:
            raise FlowError(f"not in {self.phase.value}")

    def forget(self) -> None:
        """Drop the turn in progress (the one way every path does it)."""
        self.message, self.view, self.picked = None, None, None
        self.order, self.edit = None, None

    # the model --------------------------------------------------------------
    def loading(self) -> None:
        self.forget()
        self.phase = Phase.LOADING

    def loaded(self) -> None:
        self._expect(Phase.LOADING)
        self.phase = Phase.TYPING

    def failed(self) -> None:
        self._expect(Phase.LOADING)
        self.phase = Phase.BROKEN

    # a turn -------------------------------------------------------------------
    def send(self, text: str) -> None:
        self._expect(Phase.TYPING)
        self.message, self.phase = text, Phase.GENERATING

    def regenerate(self) -> str:
        """New candidates for the same message; returns the id of the turn
        they replace."""
        self._expect(*CHOICE)
        assert self.view is not None
        turn = self.view.turn
        self.view, self.picked, self.phase = None, None, Phase.GENERATING
        self.order, self.edit = None, None
        return turn

    def generated(self, view: TurnView) -> None:
        self._expect(Phase.GENERATING)
        self.view, self.phase = view, Phase.CHOOSING

    def stopped(self) -> str:
        """Generation cancelled or refused: back to typing; returns the message."""
        self._expect(Phase.GENERATING)
        message = self.message or ""
        self.forget()
        self.phase = Phase.TYPING
        return message

    def pick(self, rank: int) -> ShownCandidate | None:
        """The candidate shown at `rank` (1-based) is picked; None if no such rank."""
        self._expect(Phase.CHOOSING)
        assert self.view is not None
        if not 1 <= rank <= len(self.view.candidates):
            return None
        self.picked, self.phase = self.view.candidates[rank - 1], Phase.RATING
        return self.picked

    def start_continue(self, rank: int) -> ShownCandidate:
        """The model goes on with the candidate shown at `rank` (1-based)."""
        self._expect(Phase.CHOOSING)
        assert self.view is not None
        self.phase = Phase.CONTINUING
        return self.view.candidates[rank - 1]

    def continued(self, whole: ShownCandidate | None) -> None:
        """Back to choosing, with the continued candidate in place (None:
        cancelled or refused, the candidate as it was)."""
        self._expect(Phase.CONTINUING)
        assert self.view is not None
        if whole is not None:
            shown = [whole if c.id == whole.id else c for c in self.view.candidates]
            self.view = replace(self.view, candidates=shown)
        self.phase = Phase.CHOOSING

    def start_order(self) -> None:
        self._expect(Phase.CHOOSING)
        self.phase = Phase.ORDERING

    def submit_order(self, text: str) -> ShownCandidate:
        """The typed order (parse_order; ValueError if it does not parse):
        its first candidate is the pick, awaiting its rating."""
        self._expect(Phase.ORDERING)
        assert self.view is not None
        shown = self.view.candidates
        groups = parse_order(text, len(shown))
        self.order = [[shown[rank - 1].id for rank in group] for group in groups]
        self.picked, self.phase = shown[groups[0][0] - 1], Phase.RATING
        return self.picked

    def start_edit(self, rank: int) -> ShownCandidate:
        """Edit the candidate shown at `rank` (1-based)."""
        self._expect(Phase.CHOOSING)
        assert self.view is not None
        self.picked, self.phase = self.view.candidates[rank - 1], Phase.EDITING
        return self.picked

    def submit_edit(self, text: str) -> None:
        self._expect(Phase.EDITING)
        self.edit, self.phase = text, Phase.RATING

    def rate(self) -> tuple[str, int]:
        """The rating is given (or skipped): (turn id, picked candidate id) to learn."""
        self._expect(Phase.RATING)
        assert self.view is not None and self.picked is not None
        self.phase = Phase.LEARNING
        return self.view.turn, self.picked.id

    def write_own(self) -> None:
        self._expect(*CHOICE)
        self.picked, self.phase = None, Phase.REPLYING

    def back_to_choosing(self) -> None:
        """From writing an own reply, an order or an edit, or after an answer
        could not be stored."""
        self._expect(Phase.REPLYING, Phase.ORDERING, Phase.EDITING, Phase.LEARNING)
        self.picked, self.phase = None, Phase.CHOOSING
        self.order, self.edit = None, None

    def submit_reply(self) -> str:
        """The own reply is sent: returns the turn id it answers."""
        self._expect(Phase.REPLYING)
        assert self.view is not None
        self.phase = Phase.LEARNING
        return self.view.turn

    def reply_refused(self) -> None:
        self._expect(Phase.LEARNING)
        self.phase = Phase.REPLYING

    def answered(self) -> None:
        self._expect(Phase.LEARNING)
        self.forget()
        self.phase = Phase.TYPING

    def restart(self) -> None:
        """The dialogue changed under the turn (new, resumed or deleted session):
        the turn on screen is dropped and the user types again."""
        self._expect(Phase.TYPING, *CHOICE, Phase.BROKEN, Phase.REPLYING, Phase.ORDERING,
                     Phase.EDITING)
        self.forget()
        if self.phase is not Phase.BROKEN:
            self.phase = Phase.TYPING


def parse_order(text: str, shown: int) -> list[list[int]]:
    """Ranks (1-based, as shown) best first from what the user typed:
    "2 1 3", "2,1,3" or "213"; "=" ties its neighbours ("2 1=3").
    Raises ValueError with a sentence for the user."""
    groups: list[list[int]] = []
    seen: set[int] = set()
    tie = False
    for ch in text.replace(",", " "):
        if ch.isspace():
            continue
        if ch == "=":
            if not groups or tie:
                raise ValueError("A '=' must stand between two replies, as in 2 1=3.")
            tie = True
            continue
        if not ch.isdigit() or not 1 <= int(ch) <= shown:
            raise ValueError(f"{ch!r} is not a reply number; use 1-{shown}, e.g. 2 1=3.")
        rank = int(ch)
        if rank in seen:
            raise ValueError(f"Reply {rank} is in the order twice.")
        seen.add(rank)
        if tie:
            groups[-1].append(rank)
        else:
            groups.append([rank])
        tie = False
    if tie:
        raise ValueError("A '=' must stand between two replies, as in 2 1=3.")
    if not groups:
        raise ValueError(f"Type the replies best first, e.g. 2 1=3 (1-{shown}).")
    return groups
