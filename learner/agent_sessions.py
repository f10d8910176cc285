"""The agent's sessions: end, list, read, resume, rename, delete, and the
system prompt, mixed into the Agent (learner/agent.py).  State changes happen
under the agent's lock; storage faults leave as AgentErrors."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rlchat.learner.agent_views import Deleted
from rlchat.learner.dialogue import one_line, valid_unicode
from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.learner.records import Turn
from rlchat.storage import StorageFault

if TYPE_CHECKING:
    from rlchat.learner.agent import Agent

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


class SessionDoor:
    def end(self: Agent) -> str | None:
        """End the session (terminal for Q-learning); the next message opens a new one."""
        with self._lock, storing():
            self._close_open_turn()
            ended = self.session
            self.session, self.history, self.system = None, [], None
            self.answered_turn = None
            self._epoch += 1
            if ended is not None:
                self.store.update_session(ended, ended=time.time())
            return ended

    def sessions(self: Agent) -> list[dict[str, Any]]:
        """Stored sessions, newest first (id, title, started, turns)."""
        with self._lock:
            return sorted(self.store.sessions(), key=lambda s: s["seq"], reverse=True)

    def session_messages(self: Agent, session_id: str) -> list[tuple[str, str]]:
        """A stored session as (role, text) lines: "user", "assistant", or "note"
        for a message that got no reply."""
        with self._lock:
            lines = []
            for turn in self._session_turns(session_id):
                lines.append(("user", turn.user_text))
                reply = turn.reply_text()
                lines.append(("assistant", reply) if reply else ("note", "(no reply chosen)"))
            return lines

    def resume(self: Agent, session_id: str) -> list[tuple[str, str]]:
        """Continue a stored session: its answered turns become the history.
        Returns its messages as (role, text) for the transcript."""
        with self._lock:
            self._known_session(session_id)
            self.end()
            with storing():
                self.store.update_session(session_id, ended=None)
            self.session = session_id
            self.system = (self.store.get_session(session_id) or {}).get("system") or ""
            self.history = [(turn.user_text, turn.reply_text() or "")
                            for turn in self._session_turns(session_id) if turn.reply_text()]
            return self.session_messages(session_id)

    def rename_session(self: Agent, session_id: str, title: str) -> str:
        """Give a session a new title (one line, at most 80 characters); returns it."""
        title = one_line(checked_text(title, "title"))[:80]
        with self._lock, storing():
            self._known_session(session_id)
            self.store.update_session(session_id, title=title)
            return title

    def delete_session(self: Agent, session_id: str) -> Deleted:
        """Remove a session's turns.  The session in use ends first: the turn
        on screen is discarded with it, the model's history is cleared, and the
        next message starts a new session.  What the policy learned from the
        turns stays until an offline replay."""
        with self._lock, storing():
            self._known_session(session_id)
            was_open = session_id == self.session
            if was_open:
                self.end()
            deleted = Deleted(self.store.delete_session(session_id), was_open)
            self.store.drop_search_cache()
            if self._search is not None:
                self._search.drop_session(session_id)
            else:  # an index being built drops it when done
                self._deleted_meanwhile.add(session_id)
            return deleted

    def _system(self: Agent) -> str:
        """The system prompt of the open session, or of the next one."""
        return self.settings.system if self.system is None else self.system

    def set_system(self: Agent, system: str) -> None:
        """The system prompt of the open session from its next turn on (or of
        the next session, if none is open)."""
        system = valid_unicode(system) if isinstance(system, str) else ""
        with self._lock, storing():
            self.system = system
            if self.session is not None:
                self.store.update_session(self.session, system=system)

    def _known_session(self: Agent, session_id: str) -> None:
        session = self.store.get_session(session_id) if isinstance(session_id, str) else None
        if session is None or session.get("deleted"):
            raise AgentError(ErrorCode.UNKNOWN_SESSION, f"There is no session {session_id!r}.")

    def _session_turns(self: Agent, session_id: str) -> Iterator[Turn]:
        return map(Turn.from_dict, self.store.session_turns(session_id))
