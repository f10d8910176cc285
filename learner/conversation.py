"""The state of the conversation, owned by one object, and its rules.

The Agent (learner/agent.py) strings a turn together; its collaborators
answer turns (learner/answers.py) and manage sessions (learner/sessions.py).
All three work on one Conversation, and these rules hold for all of them:

- **One lock.** Every read or change of the state below happens under
  `lock` (re-entrant: a step may call another).  Generation runs outside
  it: a turn reads what it needs under the lock, generates, then stores
  under the lock again.
- **The epoch.** `epoch` grows whenever the dialogue a generation started
  from is gone (the session ended, was deleted, another was resumed).  A
  generation that finishes under another epoch stores nothing
  (`session_gone`).
- **At most one open turn.** `open_turn` is the latest turn, stored and
  ranked but not answered yet; only it can be answered.  A new message, or
  the end of the session, closes it as unanswered.  `answered_turn` is the
  latest answered turn, which may still take thumbs until the next message.
- **History.** `history` holds the session's exchanges that continue the
  conversation (a pick, its edit, an own reply), oldest first: what the
  next prompt is built from.
- **Stored before learned.** Every change is written to the store before
  the policy learns from it; the policy is a cache of the stored turns,
  saved every CHECKPOINT_EVERY learned turns and at a clean exit
  (`saved_seq` is the last turn the saved policy holds), so start-up can
  always learn again what a killed process had not saved.
- **Storage faults** leave a step as AgentErrors with their code
  (`storing`), except a failed policy save, which loses nothing and is
  kept as a `warning` for the front end to say once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import numpy as np

from rlchat.learner.candidate_source import CandidateSource
from rlchat.learner.curves import Curves
from rlchat.learner.dialogue import one_line, valid_unicode
from rlchat.learner.embeddings import Embeddings
from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.learner.policy import QPolicy
from rlchat.learner.policy_store import save_policy
from rlchat.learner.records import UNANSWERED, Turn
from rlchat.learner.rewards import RewardConfig
from rlchat.learner.search import SearchIndex, searchable
from rlchat.learner.settings import Settings
from rlchat.learner.update import finish_turn
from rlchat.storage import StorageFault, Store

log = logging.getLogger(__name__)

# The policy is a cache of the log: saved every CHECKPOINT_EVERY learned turns
# and at a clean exit, so a turn's durable write is only what the turn adds.
# After a kill, start-up learns at most this many stored turns again
# (benchmarks/crash.py reports how long that takes).
CHECKPOINT_EVERY = 50
MAX_MESSAGE_CHARS = 20_000


@contextlib.contextmanager
def storing() -> Iterator[None]:
    """Storage faults leave as AgentErrors with their code (storage_full, ...)."""
    try:
        yield
    except StorageFault as fault:
        raise AgentError(fault.code, fault.message) from fault


def checked_text(text: object, what: str) -> str:
    """Text from a person, refused with a clear message if empty or huge."""
    if not isinstance(text, str) or not one_line(text):
        raise AgentError(ErrorCode.EMPTY_TEXT, f"The {what} is empty; write something first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise AgentError(
            ErrorCode.TOO_LONG,
            f"The {what} has {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}.",
        )
    return valid_unicode(text)


class Conversation:
    """The conversation's state (see the module's rules), and the few steps
    that more than one collaborator takes."""

    def __init__(self, store: Store, policy: QPolicy, curves: Curves, settings: Settings,
                 rewards: RewardConfig, rng: np.random.Generator,
                 source: CandidateSource | None) -> None:
        self.lock = threading.RLock()
        self.store, self.policy, self.curves = store, policy, curves
        self.settings, self.rewards, self.rng, self.source = settings, rewards, rng, source
        self.epoch = 0
        self.session: str | None = None
        self.system: str | None = None  # the open session's system prompt
        self.history: list[tuple[str, str]] = []
        self.open_turn: Turn | None = None
        self.answered_turn: Turn | None = None  # the latest, until the next message
        self.warning: AgentError | None = None  # a problem a step survived, said once
        # The source of the meaning columns, for the source it was loaded for
        # (learner/embeddings.py; the agent loads it at a turn where it changed).
        self.embeddings: Embeddings | None = None
        self.embeddings_for: tuple | None = None
        self.saved_seq = policy.last_seq  # the last turn the saved policy holds
        self.search: SearchIndex | None = None  # built at the first search
        self.deleted_meanwhile: set[str] = set()  # sessions deleted while it is built

    def system_prompt(self) -> str:
        """The system prompt of the open session, or of the next one."""
        return self.settings.system if self.system is None else self.system

    def close_open_turn(self) -> None:
        turn = self.open_turn
        if turn is None:
            return
        self.store.update_turn(turn.id, status=UNANSWERED)
        turn.status = UNANSWERED
        # Nothing to learn from it, but it was applied (bootstrap) and counts as seen.
        finish_turn(self.policy, turn)
        self.curves.fold(turn)
        self.open_turn = None

    def end(self) -> str | None:
        """End the session (terminal for Q-learning); the next message opens a new one."""
        with self.lock, storing():
            self.close_open_turn()
            ended = self.session
            self.session, self.history, self.system = None, [], None
            self.answered_turn = None
            self.epoch += 1
            if ended is not None:
                self.store.update_session(ended, ended=time.time())
            return ended

    def index_turn(self, turn: Turn) -> None:
        if self.search is not None:
            self.search.put(turn.seq, turn.session, searchable(turn.user_text,
                                                               turn.reply_text()))

    def save_policy(self) -> None:
        """The turns behind the policy are stored, so a failed save loses
        nothing (startup relearns them); it is reported, not raised."""
        try:
            save_policy(self.store, self.policy, self.curves)
            self.saved_seq = self.policy.last_seq
        except StorageFault as fault:
            log.warning("policy not saved: %s", fault)
            self.warning = AgentError(fault.code, fault.message)

    def checkpoint(self, *, due_only: bool = False) -> None:
        """Save the policy if it learned turns since its last save (with
        `due_only`, only once CHECKPOINT_EVERY of them are waiting)."""
        with self.lock:
            waiting = self.policy.last_seq - self.saved_seq
            if waiting >= (CHECKPOINT_EVERY if due_only else 1):
                self.save_policy()
            if not due_only and self.search is not None and self.search.changed:
                with contextlib.suppress(StorageFault):  # a cache: the next start rebuilds it
                    self.store.save_search_cache(self.search.to_dict())
                    self.search.changed = False
