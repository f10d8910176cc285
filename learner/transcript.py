"""`rlchat export --format markdown`: sessions as a Markdown transcript.

A session is a heading with its title, then its system prompt, then each
message and the reply that continued the conversation (a pick, its edit or
the user's own reply), texts as written: their line breaks, lists and code
stay theirs.  With `candidates`, each turn also lists every candidate shown,
in shown order, with what the user said of it; a turn answered with new
candidates (regenerate, "none of these") appears only then, since it did not
continue the conversation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from rlchat.learner.records import REGENERATED, REJECTED, Turn

AGAIN = {REGENERATED: "asked for new candidates", REJECTED: "none of these"}


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "?"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _indented(text: str, prefix: str) -> str:
    """A text under a list item: its later lines indented to stay in it."""
    return text.replace("\n", "\n" + prefix)


def session_markdown(session: dict[str, Any], turns: list[Turn], candidates: bool) -> str:
    title = session.get("title") or "(untitled)"
    models = sorted({(t.generator or {}).get("model", "") for t in turns} - {""})
    facts = [f"started {_when(session.get('started'))}", f"{len(turns)} turns"]
    if models:
        facts.append("model " + ", ".join(f"`{m}`" for m in models))
    out = [f"## Session {session['id']}: {title}", "", " · ".join(facts), ""]
    system = session.get("system") or (turns[0].system if turns else "")
    if system:
        out += ["**System prompt:**", "", system, ""]
    for turn in turns:
        again = AGAIN.get(turn.status)
        if again and not candidates:
            continue
        out += ["**You:**", "", turn.user_text, ""]
        reply = turn.reply_text()
        if reply is not None:
            who = "You (own reply)" if turn.own_reply is not None else "Assistant"
            out += [f"**{who}:**", "", reply, ""]
        else:
            out += [f"*({again or 'no reply chosen'})*", ""]
        if candidates:
            out += _candidate_lines(turn)
    return "\n".join(out)


def _candidate_lines(turn: Turn) -> list[str]:
    marks = {t["id"]: "thumbs up" if t["good"] else "thumbs down" for t in turn.thumbs or ()}
    lines = ["Candidates, as shown:", ""]
    for position, cid in enumerate(turn.shown_ids, start=1):
        said = []
        if cid == turn.choice:
            said.append("picked" + (f", rated {turn.rating}/5" if turn.rating else ""))
            if turn.edit is not None:
                said.append("edited")
        if cid in marks:
            said.append(marks[cid])
        note = f" *({'; '.join(said)})*" if said else ""
        prefix = f"{position}. "
        lines.append(prefix + _indented(turn.candidates[cid].text, " " * len(prefix)) + note)
    return [*lines, ""]


def export_markdown(sessions: Iterable[tuple[dict[str, Any], list[Turn]]],
                    candidates: bool = False) -> Iterator[str]:
    """The transcript of each (session, its turns), oldest first, as chunks of text."""
    yield "# rlchat transcript\n"
    for session, turns in sessions:
        yield "\n" + session_markdown(session, turns, candidates)
