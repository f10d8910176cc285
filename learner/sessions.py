"""Sessions: list, read, resume, rename, delete, and the system prompt.  A
collaborator of the Agent: it works on the conversation
(learner/conversation.py) under its lock; storage faults leave as
AgentErrors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rlchat.learner.agent_views import Deleted
from rlchat.learner.conversation import Conversation, checked_text, storing
from rlchat.learner.dialogue import one_line, valid_unicode
from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.learner.records import Turn


class Sessions:
    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation

    def sessions(self) -> list[dict[str, Any]]:
        """Stored sessions, newest first (id, title, started, turns)."""
        c = self.conversation
        with c.lock:
            return sorted(c.store.sessions(), key=lambda s: s["seq"], reverse=True)

    def session_messages(self, session_id: str) -> list[tuple[str, str]]:
        """A stored session as (role, text) lines: "user", "assistant", or "note"
        for a message that got no reply."""
        c = self.conversation
        with c.lock:
            lines = []
            for turn in self._session_turns(session_id):
                lines.append(("user", turn.user_text))
                reply = turn.reply_text()
                lines.append(("assistant", reply) if reply else ("note", "(no reply chosen)"))
            return lines

    def resume(self, session_id: str) -> list[tuple[str, str]]:
        """Continue a stored session: its answered turns become the history.
        Returns its messages as (role, text) for the transcript."""
        c = self.conversation
        with c.lock:
            self._known_session(session_id)
            c.end()
            with storing():
                c.store.update_session(session_id, ended=None)
            c.session = session_id
            c.system = (c.store.get_session(session_id) or {}).get("system") or ""
            c.history = [(turn.user_text, turn.reply_text() or "")
                            for turn in self._session_turns(session_id) if turn.reply_text()]
            return self.session_messages(session_id)

    def rename_session(self, session_id: str, title: str) -> str:
        """Give a session a new title (one line, at most 80 characters); returns it."""
        c = self.conversation
        title = one_line(checked_text(title, "title"))[:80]
        with c.lock, storing():
            self._known_session(session_id)
            c.store.update_session(session_id, title=title)
            return title

    def delete_session(self, session_id: str) -> Deleted:
        """Remove a session's turns.  The session in use ends first: the turn
        on screen is discarded with it, the model's history is cleared, and the
        next message starts a new session.  What the policy learned from the
        turns stays until an offline replay."""
        c = self.conversation
        with c.lock, storing():
            self._known_session(session_id)
            was_open = session_id == c.session
            if was_open:
                c.end()
            deleted = Deleted(c.store.delete_session(session_id), was_open)
            c.store.drop_search_cache()
            if c.search is not None:
                c.search.drop_session(session_id)
            else:  # an index being built drops it when done
                c.deleted_meanwhile.add(session_id)
            return deleted

    def set_system(self, system: str) -> None:
        """The system prompt of the open session from its next turn on (or of
        the next session, if none is open)."""
        c = self.conversation
        system = valid_unicode(system) if isinstance(system, str) else ""
        with c.lock, storing():
            c.system = system
            if c.session is not None:
                c.store.update_session(c.session, system=system)

    def _known_session(self, session_id: str) -> None:
        c = self.conversation
        session = c.store.get_session(session_id) if isinstance(session_id, str) else None
        if session is None or session.get("deleted"):
            raise AgentError(ErrorCode.UNKNOWN_SESSION, f"There is no session {session_id!r}.")

    def _session_turns(self, session_id: str) -> Iterator[Turn]:
        c = self.conversation
        return map(Turn.from_dict, c.store.session_turns(session_id))
