"""Candidates from a served model, through the OpenAI API (see generator.py).

Imports no torch: a remote generator is all HTTP."""

from rlchat.learner.remote.capabilities import Capabilities
from rlchat.learner.remote.generator import RemoteGenerator

__all__ = ["Capabilities", "RemoteGenerator"]
