"""Errors the front ends show to people and programs (no heavy imports)."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every code an error (or a warning) carries: the headless protocol's
    public names, listed in docs/headless.md (a test holds the two equal)."""

    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    UNKNOWN_OP = "unknown_op"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    EMPTY_TEXT = "empty_text"
    TOO_LONG = "too_long"
    UNKNOWN_TURN = "unknown_turn"
    UNKNOWN_SESSION = "unknown_session"
    BAD_ID = "bad_id"
    BAD_RATING = "bad_rating"
    BAD_ORDER = "bad_order"
    BAD_SETTINGS = "bad_settings"
    ALREADY_ANSWERED = "already_answered"
    ALREADY_RATED = "already_rated"
    TURN_CLOSED = "turn_closed"
    NO_MODEL = "no_model"
    GENERATION_FAILED = "generation_failed"
    NO_CANDIDATES = "no_candidates"
    # A warning: every sample of the turn was the same reply (a server that
    # ignores the sampling settings).
    IDENTICAL_REPLIES = "identical_replies"
    # A warning: the embeddings source gave no vectors this turn (its meaning
    # columns are empty; the turn goes on).
    NO_EMBEDDINGS = "no_embeddings"
    NOT_CUT = "not_cut"  # continue: the reply ended on its own, or the model cannot continue
    CANCELLED = "cancelled"
    BACKEND_UNREACHABLE = "backend_unreachable"  # no connection, or it broke off
    BACKEND_AUTH = "backend_auth"  # 401/403: the key is missing or wrong
    BACKEND_MODEL = "backend_model"  # the model is not served there
    BACKEND_BUSY = "backend_busy"  # 429/503 until the timeout ran out
    BACKEND_ERROR = "backend_error"  # any other refusal, or an answer not understood
    SYSTEM_FIXED = "system_fixed"
    SESSION_GONE = "session_gone"
    # storage/faults.py names these itself (storage imports nothing above it).
    STORAGE_FULL = "storage_full"
    STORAGE_READONLY = "storage_readonly"
    STORAGE_DENIED = "storage_denied"
    STORAGE_ERROR = "storage_error"
    DAMAGED_FILES = "damaged_files"  # a warning: files found damaged at start
    INTERNAL = "internal"


class ModelUnavailable(Exception):
    """The model cannot be loaded; the message is one sentence naming the fix."""


class AgentError(Exception):
    """A request the agent refuses, with a stable code for the headless protocol."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
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


BACKEND_UNREACHABLE = ErrorCode.BACKEND_UNREACHABLE
BACKEND_AUTH = ErrorCode.BACKEND_AUTH
BACKEND_MODEL = ErrorCode.BACKEND_MODEL
BACKEND_BUSY = ErrorCode.BACKEND_BUSY
BACKEND_ERROR = ErrorCode.BACKEND_ERROR
BACKEND_CODES = (BACKEND_UNREACHABLE, BACKEND_AUTH, BACKEND_MODEL, BACKEND_BUSY, BACKEND_ERROR)
