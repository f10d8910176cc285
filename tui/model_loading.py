"""Loading the agent and its model in the background: a collaborator of the App.

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
    """Loads one app's agent and model in worker threads and shows how far
    it has got."""

    def __init__(self, app: RlchatApp) -> None:
        self.app = app
        self._load_started = 0.0
        self._load_stage = ""
        self._load_ticker = None

    def load_model(self) -> None:
        app = self.app
        app.flow.loading()
        app.refresh_bindings()
        self._load_started = time.monotonic()
        self._load_stage = ""
        app.set_status(f"Loading model {app.settings.model}…")
        app.busy(True)
        box = app.query_one(PromptInput)
        box.disabled, box.placeholder = True, "Loading the model…"
        self._load_ticker = app.set_interval(0.5, self._tick_loading)
        self.load_in_background(app.settings)

    def _tick_loading(self) -> None:
        app = self.app
        if app.flow.phase is Phase.LOADING:
            seconds = time.monotonic() - self._load_started
            stage = f": {self._load_stage}" if self._load_stage else ""
            app.set_status(f"Loading model {app.settings.model}{stage}… {seconds:.0f} s")

    def loading_stage(self, stage: str) -> None:
        """What the load is doing now (fetching, converting, the weights), from
        the loading thread; the ticker shows it with the seconds."""
        self._load_stage = stage

    def load_in_background(self, settings: Settings) -> None:
        app = self.app
        app.run_worker(lambda: self._load(settings), thread=True, exclusive=True,
                        group="model")

    def _load(self, settings: Settings) -> None:
        app = self.app
        background_priority()
        if app.agent is None:  # the core first: sessions and curves need no model
            from rlchat.learner.agent import Agent

            try:
                agent = Agent(app.store, None, settings, seed=app.seed)
            except AgentError as exc:
                app.call_from_thread(self.model_failed, exc.message)
                return
            app.call_from_thread(self.core_ready, agent)
        try:
            source = app.source_factory(settings)
        except ModelUnavailable as exc:
            app.call_from_thread(self.model_failed, str(exc))
        except AgentError as exc:  # a served model's settings that cannot work
            app.call_from_thread(self.model_failed, exc.message)
        except Exception as exc:  # shown, never a traceback on the terminal
            log.exception("model load failed")
            app.call_from_thread(self.model_failed, f"Loading failed: {exc}")
        else:
            app.call_from_thread(self.model_ready, source)

    def core_ready(self, agent: Agent) -> None:
        app = self.app
        app.agent = agent
        for warning in app.store.warnings:
            app.notify(warning, severity="warning", markup=False)
        app.refresh_subtitle()

    def model_ready(self, source: CandidateSource) -> None:
        app = self.app
        assert app.agent is not None
        self._load_ticker.stop()
        app.agent.attach(source)
        app.flow.loaded()
        app.refresh_subtitle()
        problem = getattr(source, "problem", None)  # a served model whose server is not up
        if problem is not None:
            app.to_typing(f"{problem.message} Past sessions stay readable (F2); each message "
                           "you send tries again.", error=True)
        else:
            app.to_typing("Ready. Type a message and press Enter (F1: help).")
        notice = getattr(source, "notice", "")  # how the model was found: a fallback taken
        if notice:
            app.notify(notice, markup=False, timeout=20)

    def model_failed(self, message: str) -> None:
        app = self.app
        self._load_ticker.stop()
        app.flow.failed()
        app.refresh_bindings()
        app.busy(False)
        app.set_status(message + " Past sessions stay readable (F2); F4 changes the model.",
                        error=True)
        app.query_one(PromptInput).placeholder = "The model is not available."

