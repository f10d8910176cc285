"""Loading the agent and its model in the background, mixed into the App.

The agent's core (store, policy, sessions, curves) comes first and fast, so
F2 and F3 work while the model loads and after it fails to.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from rlchat.learner.errors import AgentError, ModelUnavailable
from rlchat.learner.settings import Settings
from rlchat.tui.turn_actions import background_priority
from rlchat.tui.turn_flow import Phase
from rlchat.tui.widgets.prompt import PromptInput

if TYPE_CHECKING:
    from rlchat.learner.agent import Agent, CandidateSource
    from rlchat.tui.app import RlchatApp

log = logging.getLogger(__name__)


class ModelLoading:
    def load_model(self: RlchatApp) -> None:
        self.flow.loading()
        self.refresh_bindings()
        self._load_started = time.monotonic()
        self._load_stage = ""
        self.set_status(f"Loading model {self.settings.model}…")
        self.busy(True)
        box = self.query_one(PromptInput)
        box.disabled, box.placeholder = True, "Loading the model…"
        self._load_ticker = self.set_interval(0.5, self._tick_loading)
        self.load_in_background(self.settings)

    def _tick_loading(self: RlchatApp) -> None:
        if self.flow.phase is Phase.LOADING:
            seconds = time.monotonic() - self._load_started
            stage = f": {self._load_stage}" if self._load_stage else ""
            self.set_status(f"Loading model {self.settings.model}{stage}… {seconds:.0f} s")

    def loading_stage(self: RlchatApp, stage: str) -> None:
        """What the load is doing now (fetching, converting, the weights), from
        the loading thread; the ticker shows it with the seconds."""
        self._load_stage = stage

    def load_in_background(self: RlchatApp, settings: Settings) -> None:
        self.run_worker(lambda: self._load(settings), thread=True, exclusive=True,
                        group="model")

    def _load(self: RlchatApp, settings: Settings) -> None:
        background_priority()
        if self.agent is None:  # the core first: sessions and curves need no model
            from rlchat.learner.agent import Agent

            try:
                agent = Agent(self.store, None, settings, seed=self.seed)
            except AgentError as exc:
                self.call_from_thread(self.model_failed, exc.message)
                return
            self.call_from_thread(self.core_ready, agent)
        try:
            source = self.source_factory(settings)
        except ModelUnavailable as exc:
            self.call_from_thread(self.model_failed, str(exc))
        except AgentError as exc:  # a served model's settings that cannot work
            self.call_from_thread(self.model_failed, exc.message)
        except Exception as exc:  # shown, never a traceback on the terminal
            log.exception("model load failed")
            self.call_from_thread(self.model_failed, f"Loading failed: {exc}")
        else:
            self.call_from_thread(self.model_ready, source)

    def core_ready(self: RlchatApp, agent: Agent) -> None:
        self.agent = agent
        for warning in self.store.warnings:
            self.notify(warning, severity="warning", markup=False)
        self._subtitle()

    def model_ready(self: RlchatApp, source: CandidateSource) -> None:
        assert self.agent is not None
        self._load_ticker.stop()
        self.agent.attach(source)
        self.flow.loaded()
        self._subtitle()
        problem = getattr(source, "problem", None)  # a served model whose server is not up
        if problem is not None:
            self.to_typing(f"{problem.message} Past sessions stay readable (F2); each message "
                           "you send tries again.", error=True)
        else:
            self.to_typing("Ready. Type a message and press Enter (F1: help).")
        notice = getattr(source, "notice", "")  # how the model was found: a fallback taken
        if notice:
            self.notify(notice, markup=False, timeout=20)

    def model_failed(self: RlchatApp, message: str) -> None:
        self._load_ticker.stop()
        self.flow.failed()
        self.refresh_bindings()
        self.busy(False)
        self.set_status(message + " Past sessions stay readable (F2); F4 changes the model.",
                        error=True)
        self.query_one(PromptInput).placeholder = "The model is not available."

