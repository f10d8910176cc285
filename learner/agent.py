"""The agent: the one door from the front ends to the stored state and the policy.

A turn: propose, rank, store, then feedback, store, learn.  Sessions (list,
resume, rename, delete), a read-only view of the policy and its curves, and
reconfiguring from the settings go through here too, so the TUI and the
headless protocol never touch the store or the policy themselves.

The agent starts without a model (`attach` gives it one), so past sessions
and the learning curves are available while the model loads or if it fails.
Its methods may be called from several threads (the TUI generates in a
worker): state changes happen under one lock, generation outside it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from rlchat.learner.agent_answers import AnswerDoor
from rlchat.learner.agent_sessions import SessionDoor, checked_text, storing
from rlchat.learner.agent_views import (
    CandidateSource,
    Deleted,
    PolicyView,
    ShownCandidate,
    TurnView,
)
from rlchat.learner.curves import Curves
from rlchat.learner.dialogue import one_line, valid_unicode
from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.learner.features import FEATURE_NAMES, FEATURE_VERSION, featurize
from rlchat.learner.policy import PolicyConfig
from rlchat.learner.policy_store import load_policy, save_policy
from rlchat.learner.records import (
    PENDING,
    UNANSWERED,
    Proposal,
    Turn,
    new_turn,
)
from rlchat.learner.rewards import (
    RewardConfig,
)
from rlchat.learner.sampling import TokenCallback
from rlchat.learner.search import Hit, SearchIndex, searchable
from rlchat.learner.settings import Settings
from rlchat.learner.update import current, finish_turn, learnable, replay, start_turn
from rlchat.storage import StorageFault, Store

# The views are the agent's vocabulary: importable from here too.
__all__ = ["Agent", "CandidateSource", "Deleted", "PolicyView", "ShownCandidate", "TurnView",
           "load_source", "open_agent"]

log = logging.getLogger(__name__)

# The policy is a cache of the log: saved every CHECKPOINT_EVERY learned turns
# and at a clean exit, so a turn's durable write is only what the turn adds.
# After a kill, start-up learns at most this many stored turns again
# (benchmarks/crash.py reports how long that takes).
CHECKPOINT_EVERY = 50


class Agent(AnswerDoor, SessionDoor):
    def __init__(
        self,
        store: Store,
        source: CandidateSource | None = None,
        settings: Settings | None = None,
        *,
        policy_config: PolicyConfig | None = None,
        rewards: RewardConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.settings = settings or Settings()
        self.rewards = rewards or RewardConfig()
        self.rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._epoch = 0  # bumped when the dialogue a generation started from is gone
        self._warning: AgentError | None = None
        self.policy, curves = load_policy(store, policy_config)
        self.curves = curves or Curves()
        self.session: str | None = None
        self.system: str | None = None  # the open session's system prompt
        self.history: list[tuple[str, str]] = []
        self.open_turn: Turn | None = None
        self.answered_turn: Turn | None = None  # the latest, until the next message
        self._search: SearchIndex | None = None  # built at the first search
        self._deleted_meanwhile: set[str] = set()  # sessions deleted while it is built
        self._saved_seq = self.policy.last_seq  # the last turn the stored policy has
        self.recovered: tuple[int, float] = (0, 0.0)  # turns learned again at start, seconds
        with storing():
            self._recover(rebuild_curves=curves is None)
            self._configure_policy(self.settings.learner())

    # startup --------------------------------------------------------------
    def _recover(self, rebuild_curves: bool) -> None:
        """Close what a previous process left open and learn what it stored
        but did not learn (a crash between the turn write and the policy save)."""
        # Only the newest sessions can be open: each start closes what the
        # previous process left, so walk back to the first ended one.
        for seq in range(self.store.count_sessions(), 0, -1):
            session = self.store.get_session(str(seq))
            if session is None or session.get("ended") is not None:
                break
            self.store.update_session(str(seq), ended=time.time())
        # A damaged newest turn file must not make new turns reuse numbers
        # the policy has already seen.
        self.store.reserve_turns(self.policy.last_seq)
        if rebuild_curves:  # data from before the curves were kept: once
            self.curves = Curves()
        began = time.perf_counter()
        late = []
        for record in self.store.turns(after_seq=min(self.policy.last_seq, self.curves.last_seq)):
            turn = current(record)
            if turn.status == PENDING:
                turn.status = UNANSWERED
                self.store.update_turn(turn.id, status=UNANSWERED)
            if turn.seq > self.curves.last_seq:
                self.curves.fold(turn)
            self.store.count_session_turn(turn.session, turn.seq)
            if turn.seq > self.policy.last_seq:
                late.append(turn)
        if late and all(learnable(t) for t in late):
            replay(self.policy, late)
            self.recovered = (len(late), time.perf_counter() - began)
            log.info("learned %d stored turns after the policy's checkpoint in %.3f s",
                     *self.recovered)
        if late or rebuild_curves:
            self._save_policy()

    def attach(self, source: CandidateSource) -> None:
        """The model is loaded: turns can be taken from now on."""
        with self._lock:
            self.source = source
            source.sampling = self.settings.sampling()

    def detach(self) -> None:
        """Let go of the model (another one is loading); the session ends."""
        self.end()
        with self._lock:
            self.source = None

    # one turn -------------------------------------------------------------
    def say(
        self,
        text: str,
        *,
        system: str | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnView:
        """Propose, rank and store a turn for the user's message.

        `system` sets the system prompt of a new session (on an open one it
        must be the one it has).  `on_token(row, text)` streams the samples
        as they are drawn; `cancel` stops the generation
        (GenerationCancelled, nothing stored).
        """
        text = checked_text(text, "message")
        if system is not None and not isinstance(system, str):
            raise AgentError(ErrorCode.BAD_FIELD, "The system prompt must be text.")
        with self._lock, storing():
            source = self.source
            if source is None:
                raise AgentError(ErrorCode.NO_MODEL, "The model is not loaded yet; wait for it.")
            if system is not None and self.session is not None and system != self.system:
                raise AgentError(ErrorCode.SYSTEM_FIXED, "The system prompt is set on a session's "
                                 "first turn; end the session to start one with another.")
            self._close_open_turn()
            if self.session is None and system is not None:
                self.system = valid_unicode(system)
            history, epoch, samples = list(self.history), self._epoch, self.settings.samples
            persona = self._system()
        try:
            proposal = source.propose(history, text, samples, system=persona,
                                      on_token=on_token, cancel=cancel)
        except AgentError:  # a cancel, or a server's fault: its own code and sentence
            raise
        except Exception as exc:
            log.exception("generation failed")
            raise AgentError(ErrorCode.GENERATION_FAILED,
                             f"Generating replies failed: {exc}") from exc
        if not proposal.candidates:
            raise AgentError(
                ErrorCode.NO_CANDIDATES,
                "The model produced no usable reply; send the message again."
            )
        phi = featurize(text, proposal.context_hidden, proposal.candidates)
        with self._lock, storing():
            if epoch != self._epoch:
                raise AgentError(ErrorCode.SESSION_GONE, "The session ended while the replies were "
                                 "being generated; send the message again.")
            view = self._store_turn(text, proposal, phi)
            if proposal.notice and self._warning is None:
                self._warning = AgentError(ErrorCode.IDENTICAL_REPLIES, proposal.notice)
            return view

    def _store_turn(self, text: str, proposal: Proposal, phi: np.ndarray) -> TurnView:
        if self.session is None:
            self.system = self._system()
            self.session = self.store.new_session(title=one_line(text), system=self.system)
        turn = new_turn(self.session, text, proposal, phi, feature_version=FEATURE_VERSION,
                        policy_version=self.policy.version, system=self.system or "")
        before = self.policy.checkpoint()
        start_turn(self.policy, turn)
        order, probs, scores = self.policy.rank(phi, self.rng)
        turn.order = order
        turn.shown_count = min(self.settings.candidates, len(order))
        turn.propensities = [float(p) for p in probs]
        turn.scores = [float(s) for s in scores]
        turn.temperature = float(self.policy.temperature(phi))
        try:
            stored = self.store.add_turn(*turn.to_record())
        except StorageFault:
            self.policy.restore(before)  # as if the turn never happened
            raise
        turn.seq, turn.id = stored["seq"], stored["id"]
        self.open_turn, self.answered_turn = turn, None
        self.index_turn(turn)
        # Its session's counters follow from the stored turn: they are written
        # with the session's next change or the next checkpoint, and start-up
        # counts the turns after the checkpoint again (see _recover).
        self.store.count_session_turn(self.session, turn.seq)
        return TurnView(
            session=self.session,
            turn=turn.id,
            candidates=[
                ShownCandidate(i, turn.candidates[i].text, turn.scores[i], turn.propensities[i],
                               turn.candidates[i].truncated)
                for i in turn.shown_ids
            ],
        )

    def explain(self, turn_id: str, top: int = 3) -> dict[int, list[tuple[str, float]]]:
        """Why the shown candidates of the open turn are in this order: each
        one's largest feature contributions relative to the mean of those shown."""
        with self._lock:
            turn = self.open_turn
            if turn is None or turn.id != turn_id:
                raise AgentError(ErrorCode.UNKNOWN_TURN, f"Turn {turn_id!r} is not open.")
            shown = turn.shown_ids
            rows = self.policy.explain(turn.features()[shown], FEATURE_NAMES, top)
            return dict(zip(shown, rows, strict=True))

    # search ---------------------------------------------------------------
    def search_index(self, progress: Callable[[int], None] | None = None) -> SearchIndex:
        """The index of every stored turn's words: built at the first call
        (from the cache a clean exit saved, plus the turns after it), then
        kept up to date.  The first call on a long log takes a while (the TUI
        makes it in a worker, with `progress(turns read)`): it reads through
        a read-only store of its own, so the agent's lock is held only to
        catch up with what changed meanwhile."""
        with self._lock:
            if self._search is not None:
                return self._search
            # The open turn may be answered while the index is read: read it again after.
            since = self.open_turn.seq - 1 if self.open_turn else self.store.count_turns()
            self._deleted_meanwhile = set()
        reader = Store(self.store.data_dir, readonly=True)
        try:
            cached = SearchIndex.from_dict(reader.load_search_cache())
            index = SearchIndex.build(reader.turn_texts(cached.last_seq if cached else 0),
                                      progress, cached)
        finally:
            reader.close()
        with self._lock:
            if self._search is None:
                late = self.store.turn_texts(min(since, index.last_seq))
                self._search = SearchIndex.build(late, start=index)
                for session in self._deleted_meanwhile:
                    self._search.drop_session(session)
            return self._search

    def search(self, query: str, limit: int | None = None) -> list[Hit]:
        """Sessions whose messages or replies hold every word of `query`, the
        newest match first (search.SearchIndex.search)."""
        index = self.search_index()
        with self._lock:
            return index.search(query, limit)

    def index_turn(self, turn: Turn) -> None:
        if self._search is not None:
            self._search.put(turn.seq, turn.session, searchable(turn.user_text,
                                                                turn.reply_text()))

    def take_warning(self) -> AgentError | None:
        """A storage problem the last step survived (it was saved where it
        matters, but the user should know), once."""
        with self._lock:
            warning, self._warning = self._warning, None
            return warning

    # sessions -------------------------------------------------------------
    # the policy, read-only ------------------------------------------------
    def policy_view(self) -> PolicyView:
        with self._lock:
            return PolicyView(self.policy.version, self.policy.config,
                              tuple(float(w) for w in self.policy.w), FEATURE_NAMES)

    def learning_curves(self) -> Curves:
        with self._lock:
            return Curves.from_dict(self.curves.to_dict())

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "turns": self.store.count_turns(),
                "sessions": self.store.count_sessions(),
                "policy_version": self.policy.version,
                "unreadable_turns": self.store.unreadable_turns,
            }

    # settings -------------------------------------------------------------
    def reconfigure(self, settings: Settings) -> bool:
        """Use new settings from the next turn on.  Returns whether they need
        another model (the caller loads it and attaches it)."""
        problems = settings.problems()
        if problems:
            raise AgentError(ErrorCode.BAD_SETTINGS, problems[0][1].capitalize() + ".")
        with self._lock, storing():
            reload = settings.needs_reload(self.settings)
            self.settings = settings
            if self.source is not None:
                self.source.sampling = settings.sampling()
            self._configure_policy(settings.learner())
            return reload

    def _configure_policy(self, learner: dict[str, float]) -> None:
        """Learner settings (gamma, forgetting, epsilon) from now on, saved with the policy."""
        config = replace(self.policy.config, **learner)
        if config != self.policy.config:
            self.policy.config = config
            self._save_policy()

    # internals ------------------------------------------------------------
    def _close_open_turn(self) -> None:
        turn = self.open_turn
        if turn is None:
            return
        self.store.update_turn(turn.id, status=UNANSWERED)
        turn.status = UNANSWERED
        # Nothing to learn from it, but it was applied (bootstrap) and counts as seen.
        finish_turn(self.policy, turn)
        self.curves.fold(turn)
        self.open_turn = None

    def checkpoint(self, *, due_only: bool = False) -> None:
        """Save the policy if it learned turns since its last save (with
        `due_only`, only once CHECKPOINT_EVERY of them are waiting).  Front
        ends call it at a clean exit."""
        with self._lock:
            waiting = self.policy.last_seq - self._saved_seq
            if waiting >= (CHECKPOINT_EVERY if due_only else 1):
                self._save_policy()
            if not due_only and self._search is not None and self._search.changed:
                with contextlib.suppress(StorageFault):  # a cache: the next start rebuilds it
                    self.store.save_search_cache(self._search.to_dict())
                    self._search.changed = False

    def _save_policy(self) -> None:
        """The turns behind the policy are stored, so a failed save loses
        nothing (startup relearns them); it is reported, not raised."""
        try:
            save_policy(self.store, self.policy, self.curves)
            self._saved_seq = self.policy.last_seq
        except StorageFault as fault:
            log.warning("policy not saved: %s", fault)
            self._warning = AgentError(fault.code, fault.message)


def load_source(settings: Settings, *, seed: int | None = None,
                progress: Callable[[str], None] | None = None) -> CandidateSource:
    """Load the model these settings name; raises ModelUnavailable.
    `progress` hears each stage of a local model's load (a fetch, a GGUF
    conversion, the weights).

    With a base URL the model is served: the source connects and probes the
    server, and a server that does not answer yet is no failure here (its
    `problem` says why; every turn tries again), so the app still opens."""
    if settings.base_url:
        from rlchat.learner.remote import RemoteGenerator  # no torch

        remote = RemoteGenerator(
            settings.base_url, settings.model, api_key_env=settings.api_key_env,
            timeout=settings.request_timeout, sampling=settings.sampling(), seed=seed,
            prompt_format=settings.prompt_format, max_new_tokens=settings.max_new_tokens)
        with contextlib.suppress(AgentError):
            remote.connect()
        return remote
    from rlchat.learner.generator import Generator  # torch and transformers load here
    from rlchat.learner.model_files import no_progress

    return Generator.load(settings.model, progress=progress or no_progress,
                          seed=seed, dtype=settings.dtype,
                          sampling=settings.sampling(), prompt_format=settings.prompt_format,
                          max_new_tokens=settings.max_new_tokens)


def open_agent(store: Store, settings: Settings | None = None, *,
               seed: int | None = None,
               progress: Callable[[str], None] | None = None) -> Agent:
    """An agent with its model loaded (ModelUnavailable if it cannot be)."""
    settings = settings or Settings()
    return Agent(store, load_source(settings, seed=seed, progress=progress), settings, seed=seed)
