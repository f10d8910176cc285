"""`rlchat headless`: the JSON-lines protocol, one request and one answer per line.

A public contract, documented in the README.  Answers go to stdout, one JSON
object per line, flushed after each; logs go to stderr.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TextIO

from rlchat.learner.agent import Agent, TurnView
from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.tui.exit_status import ExitStatus

log = logging.getLogger(__name__)

# 2 added order and edit to choose, regenerate and none; 3 rate; 4 continue
PROTOCOL_VERSION = 6


def _field(request: dict[str, Any], name: str, kind: type) -> Any:
    """A required field of the given type (a JSON true is not an int here)."""
    if name not in request:
        raise AgentError(ErrorCode.MISSING_FIELD, f"The request needs a {name!r} field.")
    value = request[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AgentError(ErrorCode.BAD_FIELD, f"Field {name!r} must be a {kind.__name__}.")
    return value


Emit = Callable[[dict[str, Any]], None]


def _streamer(req: dict[str, Any], emit: Emit) -> Callable[[int, str], None] | None:
    if "stream" in req and _field(req, "stream", bool):
        def on_token(row: int, text: str) -> None:
            emit({"event": "token", "id": row, "text": text})
        return on_token
    return None


def _say(agent: Agent, req: dict[str, Any], emit: Emit) -> dict[str, Any]:
    system = _field(req, "system", str) if "system" in req else None
    text = _field(req, "text", str)
    # Between two turns: a background run (auto_train) may start, or its
    # adapter be swapped in before this turn is generated.
    notice = agent.between_turns()
    view = agent.say(text, system=system, on_token=_streamer(req, emit))
    answer = _turn_answer(view)
    if notice:
        answer["notice"] = notice
    return answer


def _again(none: bool) -> Callable[[Agent, dict[str, Any], Emit], dict[str, Any]]:
    def handler(agent: Agent, req: dict[str, Any], emit: Emit) -> dict[str, Any]:
        view = agent.regenerate(_field(req, "turn", str), none=none,
                                on_token=_streamer(req, emit))
        return _turn_answer(view)
    return handler


def _turn_answer(view: TurnView) -> dict[str, Any]:
    return {
        "ok": True,
        "session": view.session,
        "turn": view.turn,
        "candidates": [
            {"id": c.id, "text": c.text, "score": c.score, "propensity": c.propensity,
             "truncated": c.truncated}
            for c in view.candidates
        ],
    }


def _choose(agent: Agent, req: dict[str, Any], emit: Emit) -> dict[str, Any]:
    # The agent checks the rating (optional; null is no rating) and the order.
    order = req.get("order")
    # An order alone: the agent takes its first candidate as the pick.
    pick = _field(req, "id", int) if "id" in req or order is None else None
    edit = _field(req, "edit", str) if req.get("edit") is not None else None
    reward = agent.choose(_field(req, "turn", str), pick, req.get("rating"),
                          order=order, edit=edit)
    return {"ok": True, "reward": reward, "policy_version": agent.policy.version}


def _reply(agent: Agent, req: dict[str, Any], emit: Emit) -> dict[str, Any]:
    agent.reply(_field(req, "turn", str), _field(req, "text", str))
    return {"ok": True, "policy_version": agent.policy.version}


def _rate(agent: Agent, req: dict[str, Any], emit: Emit) -> dict[str, Any]:
    turn, candidate = _field(req, "turn", str), _field(req, "id", int)
    good = _field(req, "good", bool)
    learned = agent.rate(turn, candidate, good)
    return {"ok": True, "turn": turn, "id": candidate, "good": good, "learned": learned,
            "policy_version": agent.policy.version}


def _continue(agent: Agent, req: dict[str, Any], emit: Emit) -> dict[str, Any]:
    turn, candidate = _field(req, "turn", str), _field(req, "id", int)
    shown = agent.continue_reply(turn, candidate, on_token=_streamer(req, emit))
    return {"ok": True, "turn": turn, "id": shown.id, "text": shown.text,
            "truncated": shown.truncated}


def _end(agent: Agent, req: dict[str, Any], emit: Emit) -> dict[str, Any]:
    return {"ok": True, "session": agent.end()}


def _stats(agent: Agent, req: dict[str, Any], emit: Emit) -> dict[str, Any]:
    embeddings = agent.embeddings()
    return {"ok": True, **agent.stats(), "adapter": agent.adapter_run(),
            "training": agent.training_status(),
            "embeddings": embeddings.source if embeddings is not None else None}


OPS: dict[str, Callable[[Agent, dict[str, Any], Emit], dict[str, Any]]] = {
    "say": _say,
    "choose": _choose,
    "reply": _reply,
    "rate": _rate,
    "continue": _continue,
    "regenerate": _again(none=False),
    "none": _again(none=True),
    "end": _end,
    "stats": _stats,
}


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _drop(event: dict[str, Any]) -> None:
    pass


def handle_line(agent: Agent, line: str, emit: Emit = _drop) -> dict[str, Any]:
    """The answer to one request line; never raises for bad input.  Events that
    come before the answer (streamed tokens) go to `emit`."""
    if not line.strip():
        return error(ErrorCode.BAD_JSON, "The line is empty; send one JSON object per line.")
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        return error(ErrorCode.BAD_JSON, f"The line is not valid JSON: {exc}.")
    if not isinstance(request, dict):
        return error(ErrorCode.NOT_OBJECT, "Each line must be a JSON object.")
    op = request.get("op")
    handler = OPS.get(op) if isinstance(op, str) else None
    if handler is None:
        return error(ErrorCode.UNKNOWN_OP, f"Unknown op {op!r}; known ops: {', '.join(OPS)}.")
    try:
        answer = handler(agent, request, emit)
    except AgentError as exc:
        return error(exc.code, exc.message)
    except Exception as exc:  # the process must go on, whatever one request did
        log.exception("request failed")
        return error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    # The step is stored, but the user should hear of a storage problem.
    warning = agent.take_warning()
    if warning is not None:
        answer["warning"] = {"code": warning.code, "message": warning.message}
    return answer


def serve(agent: Agent, stdin: TextIO, stdout: TextIO) -> int:
    """Answer every line of stdin in order until end of input; returns the exit code."""
    def write(obj: dict[str, Any]) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    # Damaged files found when the data dir was opened: said once, on the first answer.
    damage = " ".join(agent.store.warnings)
    for line in stdin:
        answer = handle_line(agent, line, write)
        if damage and "warning" not in answer:
            answer["warning"] = {"code": ErrorCode.DAMAGED_FILES, "message": damage}
            damage = ""
        write(answer)
    return ExitStatus.OK
