"""Errors the front ends show to people and programs (no heavy imports)."""

from __future__ import annotations


class ModelUnavailable(Exception):
    """The model cannot be loaded; the message is one sentence naming the fix."""


class AgentError(Exception):
    """A request the agent refuses, with a stable code for the headless protocol."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GenerationCancelled(AgentError):
    """The user stopped a generation; nothing was stored."""
