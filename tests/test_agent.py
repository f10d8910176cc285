"""The agent over the tiny model and a real store: one turn end to end."""

import shutil

import numpy as np
import pytest

from rlchat.learner.errors import AgentError
from rlchat.learner.features import DIM, FEATURE_NAMES, FEATURE_VERSION
from rlchat.learner.policy_store import new_policy
from rlchat.learner.records import Turn
from rlchat.learner.update import replay


def test_say_ranks_and_stores_the_turn(make_agent):
    agent = make_agent()
    view = agent.say("hello, what should I cook tonight?")
    assert 1 <= len(view.candidates) <= 4
    assert view.session == "1" and view.turn == "1"
    stored = Turn.from_dict(agent.store.get_turn(view.turn))
    assert stored.status == "pending" and stored.feature_version == FEATURE_VERSION
    assert stored.shown_ids == [c.id for c in view.candidates]
    assert sorted(stored.order) == list(range(len(stored.candidates)))
    assert np.isclose(sum(stored.propensities), 1.0) and min(stored.propensities) > 0
    assert stored.features().shape == (len(stored.candidates), DIM) == (
        len(stored.candidates), len(FEATURE_NAMES))
    texts = [c.text for c in stored.candidates]
    assert all(t and "\n" not in t for t in texts) and len(set(texts)) == len(texts)


def test_choose_learns_and_persists_before_returning(make_agent):
    agent = make_agent()
    view = agent.say("hi")
    pick = view.candidates[-1]
    reward = agent.choose(view.turn, pick.id, 5)
    assert reward == 1.0 and agent.policy.version == 1
    stored = agent.store.get_turn(view.turn)
    assert stored["status"] == "chosen" and stored["choice"] == pick.id and stored["rating"] == 5
    assert stored["rewards"][-1] == 1.0 and len(stored["rewards"]) == len(view.candidates)
    assert agent.history == [("hi", pick.text)]
    # The policy is a checkpoint of the log: not written at every turn, and
    # rebuilt from the stored turn by the next start, bit for bit.
    assert agent.store.load_policy()["last_seq"] == 0
    live = agent.policy
    again = make_agent()
    assert again.policy.version == 1 and again.policy.w.tobytes() == live.w.tobytes()
    snapshot = again.store.load_policy()  # start-up learned the turn and saved it
    assert snapshot["version"] == 1 and snapshot["last_seq"] == int(view.turn)


def test_explain_gives_each_candidates_contributions_relative_to_the_shown_mean(make_agent):
    agent = make_agent(seed=2)
    for _ in range(3):
        view = agent.say("tell me about music")
        agent.choose(view.turn, view.candidates[0].id, 5)
    view = agent.say("and jazz?")
    why = agent.explain(view.turn, top=DIM)
    assert set(why) == {c.id for c in view.candidates}
    mean_score = np.mean([c.score for c in view.candidates])
    for cand in view.candidates:
        assert {name for name, _ in why[cand.id]} == set(FEATURE_NAMES)
        # The contributions add up to how far the score is from the mean.
        assert np.isclose(sum(value for _, value in why[cand.id]), cand.score - mean_score)
        # Every candidate has the bias: it explains no difference and is not named.
        assert dict(why[cand.id])["bias"] == 0.0
        assert "bias" not in dict(agent.explain(view.turn)[cand.id])
    top3 = agent.explain(view.turn)[view.candidates[0].id]
    full = why[view.candidates[0].id]
    assert [abs(v) for _, v in top3] == sorted((abs(v) for _, v in full), reverse=True)[:3]


def test_refusals_have_codes(make_agent):
    agent = make_agent()
    view = agent.say("tell me a joke")
    shown = {c.id for c in view.candidates}
    not_shown = next(i for i in range(100) if i not in shown)
    cases = [
        (lambda: agent.say("   \n\t"), "empty_text"),
        (lambda: agent.say("x" * 20_001), "too_long"),
        (lambda: agent.choose("999", view.candidates[0].id), "unknown_turn"),
        (lambda: agent.choose(view.turn, not_shown), "bad_id"),
        (lambda: agent.choose(view.turn, view.candidates[0].id, 6), "bad_rating"),
        (lambda: agent.choose(view.turn, view.candidates[0].id, 0), "bad_rating"),
    ]
    for call, code in cases:
        with pytest.raises(AgentError) as err:
            call()
        assert err.value.code == code
    agent.choose(view.turn, view.candidates[0].id)
    with pytest.raises(AgentError) as err:
        agent.reply(view.turn, "again")
    assert err.value.code == "already_answered"


def test_sessions_index_their_turns(make_agent):
    agent = make_agent()
    first = [agent.say(f"a{i}").turn for i in range(3)]
    agent.end()
    second = [agent.say(f"b{i}").turn for i in range(2)]
    sessions = list(agent.store.sessions())
    assert [(s["id"], s["turns"], s["first_seq"], s["last_seq"]) for s in sessions] == [
        ("1", 3, 1, 3), ("2", 2, 4, 5)]
    assert [t["id"] for t in agent.store.session_turns("1")] == first
    assert [t["id"] for t in agent.store.session_turns("2")] == second
    assert list(agent.store.session_turns("3")) == []


def test_a_new_message_leaves_the_open_turn_unanswered(make_agent):
    agent = make_agent()
    first = agent.say("good morning")
    second = agent.say("are you there?")
    assert agent.store.get_turn(first.turn)["status"] == "unanswered"
    assert agent.store.get_turn(first.turn)["rewards"] is None
    with pytest.raises(AgentError) as err:
        agent.choose(first.turn, first.candidates[0].id)
    assert err.value.code == "turn_closed"
    agent.reply(second.turn, "my own answer")
    stored = agent.store.get_turn(second.turn)
    assert stored["status"] == "replied" and all(r < 0 for r in stored["rewards"])
    assert agent.history == [("are you there?", "my own answer")]
    assert agent.stats() == {"turns": 2, "sessions": 1, "policy_version": 1, "unreadable_turns": 0}


def _play(agent, turns: int, rng: np.random.Generator) -> None:
    """A mixed stream: picks with and without ratings, orders, edits, own
    replies, regenerates, "none of these", skipped turns and session ends,
    with thumbs before the answer (some changed), after it, and alone."""
    for t in range(turns):
        view = agent.say(f"message number {t}")
        action = t if t < 10 else rng.integers(10)  # every kind at least once
        for cand in view.candidates:
            if rng.random() < 0.3:
                assert agent.rate(view.turn, cand.id, bool(rng.random() < 0.5)) is False
                if rng.random() < 0.3:  # changed before it was learned
                    agent.rate(view.turn, cand.id, bool(rng.random() < 0.5))
        if action in (6, 7):  # new candidates, then a pick among them
            view = agent.regenerate(view.turn, none=action == 7)
            action = 3
        ids = [c.id for c in view.candidates]
        if action == 8:
            order = [int(i) for i in rng.permutation(ids)]
            agent.choose(view.turn, order[0], int(rng.integers(1, 6)),
                         order=[order[0], order[1:3]] if len(order) > 2 else order)
        elif action == 9:
            agent.choose(view.turn, ids[-1], 4, edit=f"an edit, number {t}?")
        elif action == 0:
            agent.reply(view.turn, "I would say it differently")
        elif action == 1:
            continue  # left unanswered by the next message
        else:
            pick = view.candidates[int(rng.integers(len(view.candidates)))]
            agent.choose(view.turn, pick.id, None if action == 2 else int(rng.integers(1, 6)))
        if action != 1 and rng.random() < 0.4:  # a thumb on the answered turn
            cand = view.candidates[int(rng.integers(len(view.candidates)))]
            thumbs = agent.store.get_turn(view.turn)["thumbs"] or []
            if all(t["id"] != cand.id for t in thumbs):
                assert agent.rate(view.turn, cand.id, bool(rng.random() < 0.5)) is True
        if rng.random() < 0.2:
            agent.end()


def test_replaying_stored_turns_gives_the_live_weights_bit_for_bit(make_agent):
    agent = make_agent(seed=3)
    _play(agent, 40, np.random.default_rng(0))
    agent.end()  # the last open turn becomes unanswered, as replay will see it
    statuses = {t["status"] for t in agent.store.turns()}
    assert {"chosen", "replied", "rejected", "regenerated", "unanswered"} <= statuses
    assert any(t["ranking"] for t in agent.store.turns())
    assert any(t["edit"] for t in agent.store.turns())
    thumbs = [th for t in agent.store.turns() for th in t.get("thumbs") or ()]
    assert {(th["late"], th["good"]) for th in thumbs} == {(a, b) for a in (0, 1) for b in (0, 1)}
    assert any(t["thumbs"] and t["status"] == "unanswered" for t in agent.store.turns())
    fresh = new_policy(agent.policy.config)
    replay(fresh, (Turn.from_dict(t) for t in agent.store.turns()))
    assert agent.policy.version > 10
    assert np.array_equal(fresh.A, agent.policy.A)
    assert np.array_equal(fresh.b, agent.policy.b)
    assert np.array_equal(fresh.w, agent.policy.w)
    assert fresh.w.tobytes() == agent.policy.w.tobytes()


def test_a_crash_between_turn_and_policy_write_is_recovered(make_agent, data_dir):
    agent = make_agent(seed=1)
    view = agent.say("first")
    agent.choose(view.turn, view.candidates[0].id, 4)
    before = data_dir / "policy.before"
    shutil.copy(data_dir / "policy.json", before)
    view = agent.say("second")
    agent.choose(view.turn, view.candidates[1 % len(view.candidates)].id, 2)
    live = agent.policy
    agent.store.close()
    # As if the process died after storing turn 2 but before saving the policy.
    shutil.copy(before, data_dir / "policy.json")
    again = make_agent(seed=1)
    assert again.policy.version == live.version == 2
    assert again.policy.w.tobytes() == live.w.tobytes()
    assert again.store.load_policy()["last_seq"] == 2


def test_a_late_thumb_after_a_checkpoint_reaches_the_saved_policy(make_agent, data_dir,
                                                                    monkeypatch):
    monkeypatch.setattr("rlchat.learner.conversation.CHECKPOINT_EVERY", 1)
    agent = make_agent(seed=2)
    view = agent.say("first")
    agent.choose(view.turn, view.candidates[0].id, 4)  # a checkpoint: turn 1 is saved
    assert agent.store.load_policy()["last_seq"] == 1
    assert agent.rate(view.turn, view.candidates[-1].id, False) is True
    saved = agent.store.load_policy()
    # Start-up learns only turns after last_seq: the thumb must be in the file.
    assert saved["version"] == agent.policy.version == 2
    assert saved["w"] == agent.policy.w.tolist()
    agent.store.close()
    again = make_agent(seed=2)
    assert again.policy.w.tobytes() == agent.policy.w.tobytes()


def test_thumbs_are_checked_and_only_the_latest_turn_takes_them(make_agent):
    agent = make_agent(seed=4)
    first = agent.say("first")
    shown = [c.id for c in first.candidates]
    hidden = next(i for i in range(8) if i not in shown)
    for turn, cid, good, code in ((first.turn, hidden, True, "bad_id"),
                                  (first.turn, True, True, "bad_id"),
                                  (first.turn, shown[0], 1, "bad_field"),
                                  ("99", shown[0], True, "unknown_turn")):
        with pytest.raises(AgentError) as err:
            agent.rate(turn, cid, good)
        assert err.value.code == code
    version = agent.policy.version
    assert agent.rate(first.turn, shown[0], True) is False  # learned with the answer
    assert agent.rate(first.turn, shown[0], False) is False  # changed: not learned yet
    assert agent.policy.version == version
    agent.choose(first.turn, shown[1], 5)
    assert agent.policy.version == version + 1  # the answer and the thumb: one step
    assert agent.rate(first.turn, shown[2], True) is True
    assert agent.rate(first.turn, shown[2], True) is False  # a repeat: nothing new
    with pytest.raises(AgentError) as err:
        agent.rate(first.turn, shown[2], False)
    assert err.value.code == "already_rated"
    assert agent.store.get_turn(first.turn)["thumbs"] == [
        {"id": shown[0], "good": False, "reward": -1.0, "late": False},
        {"id": shown[2], "good": True, "reward": 1.0, "late": True}]
    agent.say("second")
    with pytest.raises(AgentError) as err:
        agent.rate(first.turn, shown[3], True)
    assert err.value.code == "turn_closed"


def test_a_turn_left_pending_by_a_dead_process_is_closed_at_startup(make_agent, data_dir):
    agent = make_agent()
    view = agent.say("anyone?")
    agent.store.close()  # the process dies with the turn open
    again = make_agent()
    assert again.store.get_turn(view.turn)["status"] == "unanswered"
    assert again.store.get_session(view.session)["ended"] is not None
    assert again.say("hello again").session != view.session


def test_a_user_who_likes_short_replies_gets_them_ranked_first(make_agent):
    """By turns 81-100 the shortest candidate is ranked first at least half
    the time: four times what a random order does (1 in 8 candidates)."""
    agent = make_agent(seed=7)
    first_is_shortest, candidates = [], []
    for t in range(100):
        view = agent.say(f"tell me something, please ({t})")
        turn = Turn.from_dict(agent.store.get_turn(view.turn))
        lengths = [len(c.text) for c in turn.candidates]
        first_is_shortest.append(lengths[turn.order[0]] == min(lengths))
        candidates.append(len(lengths))
        pick = min(view.candidates, key=lambda c: len(c.text))
        agent.choose(view.turn, pick.id, 5)
        if t % 10 == 9:
            agent.end()
    late = np.mean(first_is_shortest[80:])
    chance = np.mean([1.0 / n for n in candidates[80:]])
    assert late >= max(0.5, 4 * chance), (late, chance)


def test_an_order_of_several_is_stored_whole_and_learned_as_pairs(make_agent):
    agent = make_agent(seed=4)
    view = agent.say("tell me a joke")
    ids = [c.id for c in view.candidates]
    assert len(ids) == 4
    for bad, code in (([], "bad_order"), ([ids[0], ids[0]], "bad_order"), ([99], "bad_order"),
                      ([ids[1], ids[0]], "bad_order"), ([[ids[0]], True], "bad_order")):
        with pytest.raises(AgentError) as err:
            agent.choose(view.turn, ids[0], 4, order=bad)  # the pick must come first
        assert err.value.code == code
    reward = agent.choose(view.turn, ids[2], 5, order=[[ids[2], ids[0]], ids[3]])
    stored = Turn.from_dict(agent.store.get_turn(view.turn))
    # The one left out ranks last; the pick's tie shares its reward.
    assert stored.ranking == [[ids[2], ids[0]], [ids[3]], [ids[1]]]
    assert reward == 1.0 and stored.rewards == [1.0, -0.2, 1.0, -0.2]
    assert stored.weights == [1.0] * 4
    from rlchat.learner.update import feedback_rows
    feedback = feedback_rows(
        stored.features(), stored.shown_ids, stored.status, stored.choice, stored.rewards,
        stored.weights, ranking=stored.ranking)
    # The pick's own row, a tie (target 0) and 2 x 2 + 1 preferences.
    assert len(feedback.rows) == 1 + 1 + 5
    assert feedback.preferences.tolist().count(True) == 5 and not feedback.preferences[0]


def test_an_edit_continues_the_conversation_and_beats_the_pick(make_agent):
    agent = make_agent(seed=5)
    view = agent.say("hi")
    pick = view.candidates[1]
    agent.choose(view.turn, pick.id, 4, edit="Hello! [b]How are you?[/b]")
    stored = Turn.from_dict(agent.store.get_turn(view.turn))
    assert agent.history == [("hi", "Hello! [b]How are you?[/b]")]
    assert stored.reply_text() == stored.edit == "Hello! [b]How are you?[/b]"
    edit_phi = np.array(stored.edit_features)
    pick_phi = stored.features()[pick.id]
    # Text columns read off the edit, the model's columns from the pick.
    model = [i for i, n in enumerate(FEATURE_NAMES) if n == "similarity" or "hidden" in n]
    assert np.array_equal(edit_phi[model], pick_phi[model])
    assert edit_phi[FEATURE_NAMES.index("question")] == 1.0
    with pytest.raises(AgentError) as err:
        agent.choose(view.turn, pick.id, edit="again")
    assert err.value.code == "already_answered"


@pytest.mark.parametrize("none", [False, True])
def test_regenerate_learns_what_was_shown_and_says_the_message_again(make_agent, none):
    agent = make_agent(seed=6)
    first = agent.say("what book should I read?")
    second = agent.regenerate(first.turn, none=none)
    old = agent.store.get_turn(first.turn)
    assert old["status"] == ("rejected" if none else "regenerated")
    assert all(r == (-0.5 if none else -0.1) for r in old["rewards"])
    assert agent.policy.version == 1 and agent.history == []
    new = agent.store.get_turn(second.turn)
    assert new["user_text"] == "what book should I read?" and new["session"] == old["session"]
    with pytest.raises(AgentError) as err:
        agent.regenerate(first.turn)
    assert err.value.code == "already_answered"


def test_search_index_is_cached_at_exit_caught_up_and_forgets_deleted_sessions(make_agent,
                                                                              data_dir):
    agent = make_agent(seed=5)
    view = agent.say("a Quokka smiles")
    agent.reply(view.turn, "so do wombats")
    agent.end()
    view = agent.say("nothing here")
    agent.choose(view.turn, view.candidates[0].id, 3, edit="an edited wombat")
    assert [h.session for h in agent.search("WOMBAT")] == ["2", "1"]  # newest match first
    assert [h.session for h in agent.search("quokka wombats")] == ["1"]  # every word
    assert agent.search("quokka zebra") == [] and agent.search("  ") == []
    agent.checkpoint()  # a clean exit saves the index
    cache = data_dir / "search.json"
    agent.store.close()
    # A word only the cache holds shows that the next start reads it, not the turns.
    cache.write_text(cache.read_text().replace("a quokka smiles", "a cached quokka"))
    again = make_agent(seed=5)
    assert [h.session for h in again.search("cached")] == ["1"]
    view = again.say("a zebra")  # after the cache: read from the turns
    again.choose(view.turn, view.candidates[0].id, 4)
    assert again.search_index().texts.keys() == {1, 2, 3}
    assert [h.session for h in again.search("zebra")] == [again.session]
    again.delete_session("1")
    assert not (data_dir / "search.json").exists()  # no deleted text outlives its turns
    assert [h.session for h in again.search("wombat")] == ["2"]
