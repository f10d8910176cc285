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
from pathlib import Path
from typing import Any

import numpy as np

from rlchat.learner.adapters import AdapterRun, run_in_use
from rlchat.learner.agent_views import Deleted, PolicyView, ShownCandidate, TurnView
from rlchat.learner.answers import Answers
from rlchat.learner.candidate_source import CandidateSource
from rlchat.learner.conversation import (
    CHECKPOINT_EVERY,
    Conversation,
    checked_text,
    storing,
)
from rlchat.learner.curves import Curves
from rlchat.learner.dialogue import one_line, valid_unicode
from rlchat.learner.embeddings import GENERATOR, EmbeddingFailed, Embeddings
from rlchat.learner.embeddings import load as load_embeddings
from rlchat.learner.errors import AgentError, ErrorCode
from rlchat.learner.features import FEATURE_NAMES, FEATURE_VERSION, featurize
from rlchat.learner.model_learning import ModelLearning, is_local
from rlchat.learner.policy import PolicyConfig, QPolicy
from rlchat.learner.policy_store import load_policy
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
from rlchat.learner.search import Hit, SearchIndex
from rlchat.learner.sessions import Sessions
from rlchat.learner.settings import Settings
from rlchat.learner.update import current, learnable, replay, start_turn
from rlchat.storage import StorageFault, Store

# The views are the agent's vocabulary: importable from here too.
__all__ = ["CHECKPOINT_EVERY", "Agent", "CandidateSource", "Deleted", "PolicyView",
           "ShownCandidate", "TurnView", "load_source", "open_agent"]

log = logging.getLogger(__name__)

class Agent:
    """One conversation (learner/conversation.py holds its state and rules),
    its turns, and the collaborators that answer them (learner/answers.py)
    and manage sessions (learner/sessions.py)."""

    def __init__(
        self,
        store: Store,
        source: CandidateSource | None = None,
        settings: Settings | None = None,
        *,
        policy_config: PolicyConfig | None = None,
        rewards: RewardConfig | None = None,
        seed: int | None = None,
        embeddings: Embeddings | None = None,
    ) -> None:
        """`embeddings`: a fixed source of the meaning columns (benchmarks
        serve vectors computed once); None: the one the settings name for
        the model in use."""
        policy, curves = load_policy(store, policy_config)
        self.conversation = Conversation(store, policy, curves or Curves(),
                                         settings or Settings(), rewards or RewardConfig(),
                                         np.random.default_rng(seed), source)
        self.answers = Answers(self.conversation, self.say)
        self.session_book = Sessions(self.conversation)
        self.model_learning = ModelLearning(self.conversation)
        self._seed = seed
        self._fixed_embeddings = embeddings
        self.recovered: tuple[int, float] = (0, 0.0)  # turns learned again at start, seconds
        with storing():
            self._recover(rebuild_curves=curves is None)
            self._configure_policy(self.conversation.settings.learner())
        self.model_learning.configure()

    # the conversation's state, read-only to the front ends ----------------
    @property
    def store(self) -> Store:
        return self.conversation.store

    @property
    def policy(self) -> QPolicy:
        return self.conversation.policy

    @property
    def source(self) -> CandidateSource | None:
        return self.conversation.source

    @property
    def settings(self) -> Settings:
        return self.conversation.settings

    @property
    def session(self) -> str | None:
        return self.conversation.session

    @property
    def system(self) -> str | None:
        return self.conversation.system

    @property
    def history(self) -> list[tuple[str, str]]:
        return self.conversation.history

    @property
    def open_turn(self) -> Turn | None:
        return self.conversation.open_turn

    # answers and sessions: the collaborators' -----------------------------
    def choose(self, turn_id: str, candidate_id: int | None, rating: int | None = None,
               *, order: list | None = None, edit: str | None = None) -> float:
        return self.answers.choose(turn_id, candidate_id, rating, order=order, edit=edit)

    def reply(self, turn_id: str, text: str) -> None:
        self.answers.reply(turn_id, text)

    def regenerate(self, turn_id: str, *, none: bool = False,
                   on_token: TokenCallback | None = None,
                   cancel: threading.Event | None = None) -> TurnView:
        return self.answers.regenerate(turn_id, none=none, on_token=on_token, cancel=cancel)

    def continue_reply(self, turn_id: str, candidate_id: int, *,
                       on_token: TokenCallback | None = None,
                       cancel: threading.Event | None = None) -> ShownCandidate:
        with self.model_learning.generating():
            return self.answers.continue_reply(turn_id, candidate_id, on_token=on_token,
                                               cancel=cancel)

    def rate(self, turn_id: str, candidate_id: int, good: bool) -> bool:
        return self.answers.rate(turn_id, candidate_id, good)

    def end(self) -> str | None:
        return self.conversation.end()

    def sessions(self) -> list[dict[str, Any]]:
        return self.session_book.sessions()

    def session_messages(self, session_id: str) -> list[tuple[str, str]]:
        return self.session_book.session_messages(session_id)

    def resume(self, session_id: str) -> list[tuple[str, str]]:
        return self.session_book.resume(session_id)

    def rename_session(self, session_id: str, title: str) -> str:
        return self.session_book.rename_session(session_id, title)

    def delete_session(self, session_id: str) -> Deleted:
        return self.session_book.delete_session(session_id)

    def set_system(self, system: str) -> None:
        self.session_book.set_system(system)

    # startup --------------------------------------------------------------
    def _recover(self, rebuild_curves: bool) -> None:
        """Close what a previous process left open and learn what it stored
        but did not learn (a crash between the turn write and the policy save)."""
        c = self.conversation
        # Only the newest sessions can be open: each start closes what the
        # previous process left, so walk back to the first ended one.
        for seq in range(c.store.count_sessions(), 0, -1):
            session = c.store.get_session(str(seq))
            if session is None or session.get("ended") is not None:
                break
            c.store.update_session(str(seq), ended=time.time())
        # A damaged newest turn file must not make new turns reuse numbers
        # the policy has already seen.
        c.store.reserve_turns(c.policy.last_seq)
        if rebuild_curves:  # data from before the curves were kept: once
            c.curves = Curves()
        began = time.perf_counter()
        late = []
        for record in c.store.turns(after_seq=min(c.policy.last_seq, c.curves.last_seq)):
            turn = current(record)
            if turn.status == PENDING:
                turn.status = UNANSWERED
                c.store.update_turn(turn.id, status=UNANSWERED)
            if turn.seq > c.curves.last_seq:
                c.curves.fold(turn)
            c.store.count_session_turn(turn.session, turn.seq)
            if turn.seq > c.policy.last_seq:
                late.append(turn)
        if late and all(learnable(t) for t in late):
            replay(c.policy, late)
            self.recovered = (len(late), time.perf_counter() - began)
            log.info("learned %d stored turns after the policy's checkpoint in %.3f s",
                     *self.recovered)
        if late or rebuild_curves:
            c.save_policy()

    def attach(self, source: CandidateSource) -> None:
        """The model is loaded: turns can be taken from now on."""
        c = self.conversation
        with c.lock:
            c.source = source
            source.sampling = c.settings.sampling()
        self.model_learning.configure()

    def detach(self) -> None:
        """Let go of the model (another one is loading); the session ends."""
        c = self.conversation
        self.end()
        with c.lock:
            c.source = None

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
        c = self.conversation
        text = checked_text(text, "message")
        if system is not None and not isinstance(system, str):
            raise AgentError(ErrorCode.BAD_FIELD, "The system prompt must be text.")
        with c.lock, storing():
            source = c.source
            if source is None:
                raise AgentError(ErrorCode.NO_MODEL, "The model is not loaded yet; wait for it.")
            if system is not None and c.session is not None and system != c.system:
                raise AgentError(ErrorCode.SYSTEM_FIXED, "The system prompt is set on a session's "
                                 "first turn; end the session to start one with another.")
            c.close_open_turn()
            if c.session is None and system is not None:
                c.system = valid_unicode(system)
            history, epoch, samples = list(c.history), c.epoch, c.settings.samples
            persona = c.system_prompt()
        try:
            with self.model_learning.generating():
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
        proposal, phi = self._features(text, source, proposal)
        with c.lock, storing():
            if epoch != c.epoch:
                raise AgentError(ErrorCode.SESSION_GONE, "The session ended while the replies were "
                                 "being generated; send the message again.")
            view = self._store_turn(text, proposal, phi)
            if proposal.notice and c.warning is None:
                c.warning = AgentError(ErrorCode.IDENTICAL_REPLIES, proposal.notice)
            return view

    def embeddings(self) -> Embeddings | None:
        """The source of the meaning columns in use (None: no model yet)."""
        source = self.source
        return None if source is None else self._embeddings(source)

    def _embeddings(self, source: CandidateSource) -> Embeddings:
        if self._fixed_embeddings is not None:
            return self._fixed_embeddings
        c = self.conversation
        # A served model's probe decides its default, and may come late.
        wanted = (id(source), c.settings.embeddings,
                  getattr(source, "capabilities", None) is not None)
        with c.lock:
            if c.embeddings is None or c.embeddings_for != wanted:
                c.embeddings, c.embeddings_for = load_embeddings(c.settings.embeddings,
                                                                 source), wanted
            return c.embeddings

    def _features(self, text: str, source: CandidateSource,
                  proposal: Proposal) -> tuple[Proposal, np.ndarray]:
        """phi of the proposal's candidates, their meaning columns from the
        embeddings source, and the proposal recording which source that was."""
        embeddings = self._embeddings(source)
        context, candidates = proposal.context_hidden, proposal.candidates
        if embeddings.kind != GENERATOR:
            proposal = replace(proposal, generator={**(proposal.generator or {}),
                                                    "embeddings": embeddings.record})
            context = None  # off, or a sentence embedder below
            try:
                meaning = embeddings.vectors(text, [cand.text for cand in candidates])
            except EmbeddingFailed as exc:
                meaning = None  # the turn goes on, its meaning columns empty
                with self.conversation.lock:
                    if self.conversation.warning is None:
                        self.conversation.warning = AgentError(
                            ErrorCode.NO_EMBEDDINGS,
                            f"{exc} This turn's meaning columns are empty; it is kept and "
                            "learned.")
            if meaning is not None:
                context = meaning[0]
                candidates = [replace(cand, hidden=row)
                              for cand, row in zip(candidates, meaning[1], strict=True)]
        return proposal, featurize(text, context, candidates)

    def _store_turn(self, text: str, proposal: Proposal, phi: np.ndarray) -> TurnView:
        c = self.conversation
        if c.session is None:
            c.system = c.system_prompt()
            c.session = c.store.new_session(title=one_line(text), system=c.system)
        turn = new_turn(c.session, text, proposal, phi, feature_version=FEATURE_VERSION,
                        policy_version=c.policy.version, system=c.system or "")
        before = c.policy.checkpoint()
        start_turn(c.policy, turn)
        order, probs, scores = c.policy.rank(phi, c.rng)
        turn.order = order
        turn.shown_count = min(c.settings.candidates, len(order))
        turn.propensities = [float(p) for p in probs]
        turn.scores = [float(s) for s in scores]
        turn.temperature = float(c.policy.temperature(phi))
        try:
            stored = c.store.add_turn(*turn.to_record())
        except StorageFault:
            c.policy.restore(before)  # as if the turn never happened
            raise
        turn.seq, turn.id = stored["seq"], stored["id"]
        c.open_turn, c.answered_turn = turn, None
        c.index_turn(turn)
        # Its session's counters follow from the stored turn: they are written
        # with the session's next change or the next checkpoint, and start-up
        # counts the turns after the checkpoint again (see _recover).
        c.store.count_session_turn(c.session, turn.seq)
        return TurnView(
            session=c.session,
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
        c = self.conversation
        with c.lock:
            turn = c.open_turn
            if turn is None or turn.id != turn_id:
                raise AgentError(ErrorCode.UNKNOWN_TURN, f"Turn {turn_id!r} is not open.")
            shown = turn.shown_ids
            rows = c.policy.explain(turn.features()[shown], FEATURE_NAMES, top)
            return dict(zip(shown, rows, strict=True))

    # search ---------------------------------------------------------------
    def search_index(self, progress: Callable[[int], None] | None = None) -> SearchIndex:
        """The index of every stored turn's words: built at the first call
        (from the cache a clean exit saved, plus the turns after it), then
        kept up to date.  The first call on a long log takes a while (the TUI
        makes it in a worker, with `progress(turns read)`): it reads through
        a read-only store of its own, so the agent's lock is held only to
        catch up with what changed meanwhile."""
        c = self.conversation
        with c.lock:
            if c.search is not None:
                return c.search
            # The open turn may be answered while the index is read: read it again after.
            since = c.open_turn.seq - 1 if c.open_turn else c.store.count_turns()
            c.deleted_meanwhile = set()
        reader = Store(c.store.data_dir, readonly=True)
        try:
            cached = SearchIndex.from_dict(reader.load_search_cache())
            index = SearchIndex.build(reader.turn_texts(cached.last_seq if cached else 0),
                                      progress, cached)
        finally:
            reader.close()
        with c.lock:
            if c.search is None:
                late = c.store.turn_texts(min(since, index.last_seq))
                c.search = SearchIndex.build(late, start=index)
                for session in c.deleted_meanwhile:
                    c.search.drop_session(session)
            return c.search

    def search(self, query: str, limit: int | None = None) -> list[Hit]:
        """Sessions whose messages or replies hold every word of `query`, the
        newest match first (search.SearchIndex.search)."""
        c = self.conversation
        index = self.search_index()
        with c.lock:
            return index.search(query, limit)

    def take_warning(self) -> AgentError | None:
        """A storage problem the last step survived (it was saved where it
        matters, but the user should know), once."""
        c = self.conversation
        with c.lock:
            warning, c.warning = c.warning, None
            return warning

    # the policy, read-only ------------------------------------------------
    def policy_view(self) -> PolicyView:
        c = self.conversation
        with c.lock:
            return PolicyView(c.policy.version, c.policy.config,
                              tuple(float(w) for w in c.policy.w), FEATURE_NAMES)

    def learning_curves(self) -> Curves:
        c = self.conversation
        with c.lock:
            return Curves.from_dict(c.curves.to_dict())

    def stats(self) -> dict[str, int]:
        c = self.conversation
        with c.lock:
            return {
                "turns": c.store.count_turns(),
                "sessions": c.store.count_sessions(),
                "policy_version": c.policy.version,
                "unreadable_turns": c.store.unreadable_turns,
            }

    # settings -------------------------------------------------------------
    def reconfigure(self, settings: Settings) -> bool:
        """Use new settings from the next turn on.  Returns whether they need
        another model (the caller loads it and attaches it)."""
        c = self.conversation
        problems = settings.problems()
        if problems:
            raise AgentError(ErrorCode.BAD_SETTINGS, problems[0][1].capitalize() + ".")
        with c.lock, storing():
            reload = settings.needs_reload(c.settings)
            c.settings = settings
            if c.source is not None:
                c.source.sampling = settings.sampling()
            self._configure_policy(settings.learner())
        if not reload:
            self.model_learning.configure()
        return reload

    def _configure_policy(self, learner: dict[str, float]) -> None:
        """Learner settings (gamma, forgetting, epsilon) from now on, saved with the policy."""
        c = self.conversation
        config = replace(c.policy.config, **learner)
        if config != c.policy.config:
            c.policy.config = config
            c.save_policy()

    # the model that learns while the user chats (learner/model_learning.py) --
    def training_status(self) -> str:
        """The background run's progress, or the rows to the next; '' when off."""
        return self.model_learning.status()

    def typing(self) -> None:
        """The user pressed a key: a background run holds until the keys stop."""
        self.model_learning.typing()

    def idle_check(self) -> None:
        """Call now and then (the app: every second): a held run goes on once
        the keys have stopped."""
        self.model_learning.idle_check()

    def between_turns(self) -> str:
        """Call between two turns (a worker thread may: it can load a model):
        starts a background run where one is due, and where one has ended,
        uses its adapter if it beats the bar.  One line to show, or ''."""
        learning = self.model_learning
        if self.source is None or not learning.switching.acquire(blocking=False):
            return ""  # no model yet, or a switch already going on
        try:
            changed, named = learning.named_elsewhere()  # rlchat adapters use, meanwhile
            if changed:
                return self.use_adapter(named)
            if not is_local(self.source):
                return ""  # auto_train trains local models
            finished = learning.between_turns()
            return "" if finished is None else learning.adopt(finished, self._load)
        except AgentError as exc:  # the model that runs stays: said, never raised
            return exc.message
        except Exception as exc:
            log.exception("work on the model between turns")
            return f"Switching the model failed ({type(exc).__name__}: {exc}); it runs as before."
        finally:
            learning.switching.release()

    def use_adapter(self, run: int | None) -> str:
        """The chat's model with adapter `run` from the next turn, or the base
        (None): a local model loaded with it merged, a served one asking its
        server for it.  One line that says so."""
        if self.source is None:
            raise AgentError(ErrorCode.NO_MODEL, "The model is not loaded yet; wait for it.")
        if not is_local(self.source):
            return self.model_learning.use_served(run)
        return self.model_learning.use(run, self._load)

    def adapter_run(self) -> int | None:
        """The adapter run the chat's model runs with (None: the base)."""
        identity = self.source.identity if self.source is not None else {}
        return int(identity["lineage"]) if identity.get("adapter") else None

    def adapters(self) -> list[AdapterRun]:
        """Every adapter run in the data dir, oldest first."""
        return self.model_learning.runs()

    def model_learning_lines(self) -> list[str]:
        """What the model itself has learned, a line each (F3)."""
        return self.model_learning.lines(self.adapter_run())

    def _load(self, adapter: Path | None) -> CandidateSource:
        return load_source(self.settings, seed=self._seed, adapter=adapter)

    def stop_training(self) -> None:
        """End a background run now, leaving nothing half written (at exit)."""
        self.model_learning.stop()

    # the policy's checkpoint ----------------------------------------------
    def checkpoint(self, *, due_only: bool = False) -> None:
        """Save the policy if it learned turns since its last save (with
        `due_only`, only once CHECKPOINT_EVERY of them are waiting).  Front
        ends call it at a clean exit."""
        self.conversation.checkpoint(due_only=due_only)

def load_source(settings: Settings, *, seed: int | None = None,
                progress: Callable[[str], None] | None = None,
                adapter: Path | None = None) -> CandidateSource:
    """Load the model these settings name; raises ModelUnavailable.
    `progress` hears each stage of a local model's load (a fetch, a GGUF
    conversion, the weights); `adapter` is a LoRA adapter folder of rlchat
    train to merge into a local model.

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
        load_embeddings(settings.embeddings, remote)  # a local sentence model loads now
        return remote
    from rlchat.learner.generator import Generator  # torch and transformers load here
    from rlchat.learner.model_files import no_progress

    generator = Generator.load(settings.model, progress=progress or no_progress,
                               adapter=adapter, seed=seed, dtype=settings.dtype,
                               sampling=settings.sampling(), prompt_format=settings.prompt_format,
                               max_new_tokens=settings.max_new_tokens)
    load_embeddings(settings.embeddings, generator)  # a local sentence model loads now
    return generator


def open_agent(store: Store, settings: Settings | None = None, *,
               seed: int | None = None,
               progress: Callable[[str], None] | None = None) -> Agent:
    """An agent with its model loaded (ModelUnavailable if it cannot be)."""
    settings = settings or Settings()
    return Agent(store, load_source(settings, seed=seed, progress=progress,
                                    adapter=adapter_at_start(store, settings)),
                 settings, seed=seed)


def adapter_at_start(store: Store, settings: Settings) -> Path | None:
    """The adapter a local model starts with: the one last put in use in
    this data dir (rlchat adapters use, or a background run)."""
    if settings.base_url:
        return None
    run = run_in_use(store.data_dir)
    return run.path if run is not None else None
