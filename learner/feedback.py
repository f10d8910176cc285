"""Checks on what the user says about a turn beyond a single pick."""

from __future__ import annotations

from typing import Any

from rlchat.learner.errors import AgentError, ErrorCode


def complete_order(order: Any, shown_ids: list[int]) -> list[list[int]]:
    """An order of shown candidate ids, best first, as groups of ties.

    `order` lists ids or lists of ids (a list is a tie), e.g. [2, [0, 3]].
    Shown candidates it leaves out rank below every one in it, tied among
    themselves; they are added as a last group, so that the stored ranking
    says everything on its own.  Raises AgentError(ErrorCode.BAD_ORDER)."""
    if not isinstance(order, list) or not order:
        raise AgentError(ErrorCode.BAD_ORDER, "The order must be a non-empty list of candidate ids "
                         "(a list inside it groups ties).")
    groups, seen = [], set()
    for entry in order:
        group = entry if isinstance(entry, list) else [entry]
        if not group:
            raise AgentError(ErrorCode.BAD_ORDER, "A group of ties in the order is empty.")
        for cid in group:
            if not isinstance(cid, int) or isinstance(cid, bool) or cid not in shown_ids:
                raise AgentError(ErrorCode.BAD_ORDER, f"Candidate id {cid!r} in the order was not "
                                 f"shown; shown ids: {shown_ids}.")
            if cid in seen:
                raise AgentError(ErrorCode.BAD_ORDER, f"Candidate id {cid} is in the order twice.")
            seen.add(cid)
        groups.append(list(group))
    rest = [cid for cid in shown_ids if cid not in seen]
    return groups + [rest] if rest else groups
