"""The turn flow as a plain state machine: no terminal, no model."""

from __future__ import annotations

import pytest

from rlchat.learner.agent import ShownCandidate, TurnView
from rlchat.tui.turn_flow import ALLOWED, FlowError, Phase, TurnFlow, parse_order

VIEW = TurnView("1", "7", [ShownCandidate(i, f"reply {i}", 0.0, 0.25) for i in (3, 0, 2)])


def ready() -> TurnFlow:
    flow = TurnFlow()
    flow.loaded()
    return flow


def test_a_turn_goes_typing_generating_choosing_rating_learning_typing():
    flow = ready()
    assert flow.phase is Phase.TYPING
    flow.send("hello")
    assert flow.phase is Phase.GENERATING and flow.message == "hello"
    flow.generated(VIEW)
    assert flow.phase is Phase.CHOOSING
    assert flow.pick(4) is None and flow.phase is Phase.CHOOSING  # no such rank
    assert flow.pick(2).id == 0 and flow.phase is Phase.RATING
    assert flow.rate() == ("7", 0) and flow.phase is Phase.LEARNING
    flow.answered()
    assert flow.phase is Phase.TYPING
    assert (flow.message, flow.view, flow.picked) == (None, None, None)


def test_an_own_reply_and_back():
    flow = ready()
    flow.send("hi")
    flow.generated(VIEW)
    flow.pick(1)
    flow.write_own()  # from rating too: the pick is dropped
    assert flow.phase is Phase.REPLYING and flow.picked is None
    flow.back_to_choosing()
    assert flow.phase is Phase.CHOOSING
    flow.write_own()
    assert flow.submit_reply() == "7" and flow.phase is Phase.LEARNING
    flow.reply_refused()  # e.g. an empty reply: write it again
    assert flow.phase is Phase.REPLYING
    flow.submit_reply()
    flow.answered()
    assert flow.phase is Phase.TYPING


def test_a_stopped_generation_gives_the_message_back():
    flow = ready()
    flow.send("keep me")
    assert flow.stopped() == "keep me"
    assert flow.phase is Phase.TYPING and flow.message is None


def test_regenerate_keeps_the_message_and_drops_the_candidates():
    flow = ready()
    flow.send("again")
    flow.generated(VIEW)
    flow.pick(1)
    assert flow.regenerate() == VIEW.turn  # the turn the new candidates replace
    assert flow.phase is Phase.GENERATING and flow.view is None and flow.picked is None
    assert flow.message == "again"


def test_an_answer_that_could_not_be_stored_goes_back_to_the_candidates():
    flow = ready()
    flow.send("hi")
    flow.generated(VIEW)
    flow.pick(1)
    flow.rate()
    flow.back_to_choosing()
    assert flow.phase is Phase.CHOOSING and flow.view is VIEW


def test_restart_drops_the_turn_but_not_a_broken_model():
    flow = ready()
    flow.send("hi")
    flow.generated(VIEW)
    flow.restart()
    assert flow.phase is Phase.TYPING and flow.view is None
    broken = TurnFlow()
    broken.failed()
    broken.restart()
    assert broken.phase is Phase.BROKEN


@pytest.mark.parametrize("call", ["send", "generated", "stopped", "rate", "write_own",
                                  "submit_reply", "answered", "regenerate"])
def test_a_transition_in_the_wrong_phase_is_refused(call):
    flow = TurnFlow()  # loading: none of these apply
    args = {"send": ("x",), "generated": (VIEW,)}.get(call, ())
    with pytest.raises(FlowError):
        getattr(flow, call)(*args)


def test_actions_are_allowed_only_where_they_mean_something():
    flow = ready()
    assert flow.allows("submit") and flow.allows("new_session") and flow.allows("help")
    assert not any(flow.allows(a) for a in ("digit", "cancel", "regenerate", "skip_rating"))
    flow.send("hi")
    assert flow.allows("cancel") and not flow.allows("new_session")
    assert not flow.allows("resume")  # a generation is in flight
    flow.generated(VIEW)
    assert flow.allows("digit") and flow.allows("move") and not flow.allows("skip_rating")
    flow.pick(1)
    assert flow.allows("skip_rating") and not flow.allows("move")
    assert set(ALLOWED["digit"]) == {Phase.CHOOSING, Phase.RATING}


@pytest.mark.parametrize(("text", "groups"), [
    ("2 1 3", [[2], [1], [3]]), ("213", [[2], [1], [3]]), ("2,1=3", [[2], [1, 3]]),
    (" 3 = 1 ", [[3, 1]]), ("1", [[1]]),
])
def test_an_order_as_typed(text, groups):
    assert parse_order(text, 3) == groups


@pytest.mark.parametrize(("text", "says"), [
    ("", "best first"), ("4 1", "not a reply number"), ("1 1", "twice"), ("=1", "'='"),
    ("1==2", "'='"), ("1=", "'='"), ("a", "not a reply number"),
])
def test_an_order_that_does_not_parse_says_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_order(text, 3)


def test_an_order_or_an_edit_goes_on_to_the_rating_and_back():
    flow = ready()
    flow.send("hello")
    flow.generated(VIEW)
    flow.start_order()
    assert flow.phase is Phase.ORDERING and flow.allows("submit") and not flow.allows("digit")
    with pytest.raises(ValueError):
        flow.submit_order("7")
    assert flow.phase is Phase.ORDERING  # still typing the order
    assert flow.submit_order("3 1=2").id == 2 and flow.phase is Phase.RATING
    assert flow.order == [[2], [3, 0]]
    assert flow.rate() == ("7", 2)
    flow.back_to_choosing()  # the answer could not be stored
    assert flow.order is None
    flow.start_edit(2)
    assert flow.phase is Phase.EDITING and flow.picked.id == 0
    flow.back_to_choosing()
    assert flow.picked is None and flow.phase is Phase.CHOOSING
    flow.start_edit(1)
    flow.submit_edit("mine")
    assert flow.phase is Phase.RATING and flow.edit == "mine" and flow.rate() == ("7", 3)
