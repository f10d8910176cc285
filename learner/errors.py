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


class BackendError(AgentError):
    """A served model (an OpenAI-compatible server) failed a request.

    The code is one of BACKEND_CODES, stable for the headless protocol; the
    message is one sentence for a person.  Nothing is stored for a turn that
    fails so."""


BACKEND_UNREACHABLE = "backend_unreachable"  # no connection, or it broke off
BACKEND_AUTH = "backend_auth"  # 401/403: the key is missing or wrong
BACKEND_MODEL = "backend_model"  # the model is not served there
BACKEND_BUSY = "backend_busy"  # 429/503 until the timeout ran out
BACKEND_ERROR = "backend_error"  # any other refusal, or an answer not understood
BACKEND_CODES = (BACKEND_UNREACHABLE, BACKEND_AUTH, BACKEND_MODEL, BACKEND_BUSY, BACKEND_ERROR)
