"""The Q-learner's maths: exploration, learning, bootstrap, numerical safety."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rlchat.learner.policy import REFRESH_EVERY, PolicyConfig, QPolicy
from rlchat.learner.rewards import RewardConfig, own_reply_feedback, pick_feedback, rating_reward


def test_propensities_are_a_distribution_with_a_floor():
    policy = QPolicy(3, PolicyConfig(temperature_floor=0.01, epsilon=0.1))
    policy.w = np.array([10.0, 0.0, 0.0])
    phi = np.eye(3)
    order, probs, scores = policy.rank(phi, np.random.default_rng(0))
    assert sorted(order) == [0, 1, 2]
    assert np.isclose(probs.sum(), 1.0)
    assert probs.min() >= 0.1 / 3 - 1e-12
    assert probs.argmax() == 0 and scores.tolist() == [10.0, 0.0, 0.0]


def test_no_exploration_share_still_orders_every_candidate():
    """With epsilon 0 the softmax of far-apart scores rounds to exactly 0:
    the order still holds every candidate, the rest by Q."""
    policy = QPolicy(2, PolicyConfig(epsilon=0.0, temperature_floor=0.002, uncertainty=0.0))
    policy.w = np.array([100.0, 1.0])
    phi = np.array([[1.0, 0.0], [0.0, 3.0], [0.0, 1.0], [0.0, 2.0]])
    order, probs, _ = policy.rank(phi, np.random.default_rng(0))
    assert order == [0, 1, 3, 2] and probs[0] == 1.0


def test_first_place_follows_logged_propensities():
    policy = QPolicy(2, PolicyConfig(temperature_floor=0.5, epsilon=0.0))
    policy.w = np.array([0.5, 0.0])
    phi = np.eye(2)
    rng = np.random.default_rng(1)
    firsts = [policy.rank(phi, rng)[0][0] for _ in range(4000)]
    _, probs, _ = policy.rank(phi, rng)
    assert abs(np.mean(np.array(firsts) == 0) - probs[0]) < 0.03


def test_learning_moves_q_toward_rewards():
    policy = QPolicy(2, PolicyConfig(forgetting=1.0, ridge=0.1))
    good, bad = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    for _ in range(20):
        policy.learn(np.stack([good, bad]), np.array([1.0, -0.2]), np.array([1.0, 1.0]), None)
    assert policy.scores(good) > 0.9 and policy.scores(bad) < -0.15
    assert policy.version == 20


def test_bootstrap_adds_discounted_next_value_and_session_end_is_terminal():
    cfg = PolicyConfig(gamma=0.5, forgetting=1.0, ridge=1.0)
    chosen = np.array([1.0, 0.0])
    following = np.array([[0.0, 1.0]])

    def run(next_session: str) -> QPolicy:
        policy = QPolicy(2, cfg)
        policy.start_turn("s1", np.array([chosen]))
        policy.learn(np.array([chosen]), np.array([0.5]), np.array([1.0]), chosen)
        policy.w[1] = 0.8  # the next state's best candidate is worth 0.8
        policy.b[1] = 0.8 * (1.0 + cfg.ridge)
        policy.start_turn(next_session, following)
        return policy

    same, other = run("s1"), run("s2")
    # b gets gamma * 0.8 along the chosen action's features in the same session only.
    assert np.isclose(same.b[0] - other.b[0], 0.5 * 0.8)
    assert same.pending is None and other.pending is None


def test_rewards_follow_design():
    cfg = RewardConfig()
    assert [rating_reward(r, cfg) for r in (1, 3, 5)] == [-1.0, 0.0, 1.0]
    assert rating_reward(None, cfg) == cfg.unrated_pick
    rewards, weights = pick_feedback(4, 2, 5, cfg)
    assert rewards == [-cfg.skip_penalty, -cfg.skip_penalty, 1.0, -cfg.skip_penalty]
    assert weights[:3] == [1.0, 1.0, 1.0] and 0 < weights[3] < 1  # read above the pick
    rewards, weights = own_reply_feedback(3, cfg)
    assert rewards == [-cfg.own_reply_penalty] * 3 and weights[0] == 1.0 > weights[2]


def test_snapshot_round_trip_is_exact():
    policy = QPolicy(3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        phi = rng.standard_normal((4, 3))
        policy.learn(phi, rng.uniform(-1, 1, 4), rng.uniform(0, 1, 4), phi[0])
    again = QPolicy.from_dict(policy.to_dict())
    assert again.to_dict() == policy.to_dict()
    assert np.array_equal(again.A, policy.A) and np.array_equal(again.pending, policy.pending)


def test_forgetting_by_column_follows_a_drift_where_it_forgets_and_keeps_the_rest():
    """Column 0's taste flips half way; column 1's holds but is seen rarely
    after the flip.  Forgetting column 0 only follows the flip as well as
    forgetting everything, and keeps what was learned of column 1."""
    rng = np.random.default_rng(0)
    cfg = PolicyConfig(ridge=1.0, forgetting=0.9, relevance=False)
    by_column = QPolicy(2, cfg, column_forgetting=np.array([0.9, 1.0]))
    uniform = QPolicy(2, cfg)
    for t in range(200):
        sign = 1.0 if t < 100 else -1.0
        x = np.array([[rng.normal(), rng.normal() if t < 100 else 0.0]])
        y = np.array([0.5 * sign * x[0, 0] + 0.5 * x[0, 1]])
        for policy in (by_column, uniform):
            policy.learn(x, y, np.ones(1), None)
    assert by_column.w[0] < -0.4 and uniform.w[0] < -0.4  # both followed the flip
    assert by_column.w[1] > 0.4 > uniform.w[1] + 0.2  # only one remembers column 1


def test_forgetting_by_column_equal_factors_match_one_factor_and_survive_a_snapshot():
    rng = np.random.default_rng(1)
    one = QPolicy(3, PolicyConfig(forgetting=0.95))
    by_column = QPolicy(3, PolicyConfig(forgetting=0.5), column_forgetting=np.full(3, 0.95))
    for _ in range(40):  # past an exact inverse (REFRESH_EVERY)
        phi = rng.standard_normal((4, 3))
        y, c = rng.uniform(-1, 1, 4), rng.uniform(0, 1, 4)
        one.learn(phi, y, c, None)
        by_column.learn(phi, y, c, None)
    assert np.allclose(one.w, by_column.w) and np.allclose(one.P, by_column.P)
    again = QPolicy.from_dict(by_column.to_dict())
    assert again.to_dict() == by_column.to_dict()
    assert np.array_equal(again.column_forgetting, by_column.column_forgetting)
    with pytest.raises(ValueError):
        QPolicy(3, column_forgetting=np.array([0.9, 0.0, 1.0]))


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
anything = st.floats(allow_nan=True, allow_infinity=True)


_ZEROS = [0.0] * 6
# Found by hypothesis in CI: features of 1e5 overflow the statistics until
# the matrix to invert is singular; the policy must keep its weights.
_SINGULAR = [
    ([[0.0, 0.0, 0.0, 0.0]], _ZEROS, _ZEROS, False),
    ([[0.0, 0.0, 193767.0, 3995.0]], _ZEROS, [1.0, *_ZEROS[1:]], False),
    ([[0.0, 1.0, 25.0, 0.0]], [1.0, *_ZEROS[1:]], [1.0, *_ZEROS[1:]], False),
    *[([[0.0, 0.0, 0.0, 0.0]], _ZEROS, _ZEROS, False)] * 3,
    ([[0.0, 0.0, 0.0, 102.0]], _ZEROS, _ZEROS, False),
    ([[0.0, 0.0, 0.0, 1.0]], _ZEROS, _ZEROS, False),
]


@settings(max_examples=60, deadline=None)
@example(steps=_SINGULAR)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.lists(finite, min_size=4, max_size=4), min_size=1, max_size=6),
            st.lists(anything, min_size=6, max_size=6),
            st.lists(anything, min_size=6, max_size=6),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_no_nan_or_inf_for_any_stream(steps):
    policy = QPolicy(4, PolicyConfig(gamma=0.9))
    rng = np.random.default_rng(0)
    for rows, rewards, weights, new_session in steps:
        phi = np.array(rows)
        policy.start_turn("b" if new_session else "a", phi)
        _, probs, _ = policy.rank(phi, rng)
        assert np.all(np.isfinite(probs)) and np.isclose(probs.sum(), 1.0)
        n = len(phi)
        policy.learn(phi, np.array(rewards[:n]), np.array(weights[:n]), phi[0])
        assert np.all(np.isfinite(policy.w))


def test_explain_names_the_largest_contributions_against_the_mean():
    policy = QPolicy(3)
    policy.w = np.array([0.5, -2.0, 0.1])
    phi = np.array([[1.0, 0.5, 3.0], [1.0, 1.5, 1.0]])
    why = policy.explain(phi, ("bias", "length", "question"), top=3)
    # length: -1.0 and -3.0 around -2.0; question: 0.3 and 0.1 around 0.2; bias shared.
    assert [name for name, _ in why[0]] == ["length", "question", "bias"]
    assert np.allclose([value for _, value in why[0]], [1.0, 0.1, 0.0])
    assert why[1][0] == ("length", -1.0)


def test_feedback_rows_pit_the_pick_against_each_candidate_it_beat():
    from rlchat.learner.update import feedback_rows

    phi = np.arange(12.0).reshape(4, 3)
    shown = [2, 0, 3]
    rewards, weights = pick_feedback(3, 1, 4, RewardConfig())
    rows, targets, cs, chosen, prefer = feedback_rows(phi, shown, "chosen", 0, rewards, weights)
    assert np.array_equal(rows[0], phi[0]) and targets[0] == 0.5 and cs[0] == 1.0
    assert np.array_equal(rows[1], phi[0] - phi[2]) and np.array_equal(rows[2], phi[0] - phi[3])
    assert prefer.tolist() == [False, True, True]
    assert cs[1] == 1.0 and cs[2] == weights[2] < 1.0  # read above the pick; maybe below
    assert np.array_equal(chosen, phi[0])
    rewards, weights = own_reply_feedback(3, RewardConfig())
    rows, targets, cs, chosen, prefer = feedback_rows(phi, shown, "replied", None, rewards,
                                                      weights)
    assert np.array_equal(rows, phi[shown]) and chosen is None and all(targets < 0)
    assert not prefer.any()


def test_a_preference_is_the_gaussian_row_that_matches_the_probit_posterior():
    from math import erfc, sqrt

    from rlchat.learner.policy import probit_observation

    # f ~ N(mean, var), likelihood Phi(f / scale): the posterior's moments by quadrature.
    mean, var, scale = np.array([-0.3, 0.0, 0.4, 3.0]), np.array([0.2, 0.5, 0.1, 0.05]), 0.3
    target, precision = probit_observation(mean, var, scale)
    for m, v, t, p in zip(mean, var, target, precision, strict=True):
        f = np.linspace(m - 10 * sqrt(v), m + 10 * sqrt(v), 20001)
        post = np.exp(-0.5 * (f - m) ** 2 / v) * np.array(
            [0.5 * erfc(-x / scale / sqrt(2)) for x in f])
        post /= post.sum()
        exact_mean = float((f * post).sum())
        exact_var = float(((f - exact_mean) ** 2 * post).sum())
        # The Gaussian row (target t, precision p) combined with N(m, v):
        row_var = 1.0 / (1.0 / v + p)
        assert row_var == pytest.approx(exact_var, rel=1e-3)
        assert row_var * (m / v + p * t) == pytest.approx(exact_mean, abs=1e-4)
    # Held by far, a preference weighs next to nothing; violated, it weighs the most.
    assert precision[3] < 1e-3 < precision[2] < precision[0]


def test_a_violated_preference_moves_the_weights_more_than_a_held_one():
    held, violated = QPolicy(2), QPolicy(2)
    for policy in (held, violated):
        policy.learn(np.array([[1.0, 0.0]]), np.array([1.0]), np.ones(1), None)
    before = held.w.copy()
    row = np.array([[1.0, -1.0]])  # the first column's side is preferred: already so
    held.learn(row, np.zeros(1), np.ones(1), None, preferences=np.array([True]))
    violated.learn(-row, np.zeros(1), np.ones(1), None, preferences=np.array([True]))
    assert np.abs(held.w - before).sum() < np.abs(violated.w - before).sum()
    assert held.w[0] > before[0] and violated.w[0] < before[0]


def test_uncertainty_shrinks_with_data_and_so_does_the_temperature():
    policy = QPolicy(2, PolicyConfig(temperature_floor=0.01, uncertainty=0.5))
    phi = np.array([[1.0, 0.0], [0.0, 1.0]])
    before = policy.temperature(phi)
    for _ in range(50):
        policy.learn(phi, np.array([1.0, 0.0]), np.ones(2), None)
    assert policy.temperature(phi) < before / 3
    assert policy.temperature(phi) >= 0.01


def _taste_in_one_column(policy: QPolicy, turns: int, seed: int = 0) -> None:
    """Preferences by column 0 alone, among 20 columns that all grow with a
    shared 'length' (as letter counts do): a taste that lives in one column."""
    rng = np.random.default_rng(seed)
    for _ in range(turns):
        length = rng.uniform(0.5, 2.0, 4)
        phi = length[:, None] * rng.uniform(0.5, 1.5, (4, 20)) * 0.2
        best = int(np.argmax(phi[:, 0] + rng.normal(0, 0.01, 4)))
        rows = np.array([phi[best] - phi[i] for i in range(4) if i != best])
        policy.learn(rows, np.zeros(3), np.ones(3), None, preferences=np.ones(3, dtype=bool))


def test_relevance_lets_the_column_a_taste_lives_in_grow_and_shrinks_the_rest():
    fitted = QPolicy(20, PolicyConfig(relevance=True))
    one_ridge = QPolicy(20, PolicyConfig(relevance=False))
    for policy in (fitted, one_ridge):
        _taste_in_one_column(policy, 64)
    ridge = fitted.config.ridge
    assert fitted.prior[0] < ridge < np.median(fitted.prior[1:])
    assert np.all(one_ridge.prior == ridge)

    def share(policy: QPolicy) -> float:
        return abs(policy.w[0]) / np.abs(policy.w).sum()

    assert share(fitted) > share(one_ridge) + 0.05


def test_fitted_prior_survives_a_snapshot():
    policy = QPolicy(20)
    _taste_in_one_column(policy, 20)  # past an exact inverse, short of the next
    assert policy.since_exact > 0 and not np.all(policy.prior == policy.config.ridge)
    again = QPolicy.from_dict(policy.to_dict())
    assert again.to_dict() == policy.to_dict()
    for replica in (policy, again):  # and they go on the same, refit included
        _taste_in_one_column(replica, 10, seed=1)
    assert np.array_equal(again.w, policy.w) and np.array_equal(again.prior, policy.prior)
    # A snapshot stored before relevance existed: tests/test_old_data.py.


def test_forgotten_columns_go_back_to_the_ridge():
    policy = QPolicy(20)
    _taste_in_one_column(policy, 40)
    assert policy.prior[0] != policy.config.ridge
    policy.forget_columns([0, 1])
    assert policy.prior[0] == policy.prior[1] == policy.config.ridge
    assert policy.w[0] == 0.0


def test_population_factors_set_where_each_column_starts_and_what_relevance_ties_it_to():
    cfg = PolicyConfig(ridge=2.0, forgetting=1.0)
    policy = QPolicy(3, cfg, population=np.array([0.1, 10.0, 1.0]))
    assert np.allclose(policy.prior, [0.2, 20.0, 2.0])
    # The same evidence moves a loose column's weight further than a tight one's.
    for _ in range(REFRESH_EVERY + 1):  # through an exact inverse with a refit of the priors
        policy.learn(np.array([[1.0, 1.0, 0.0]]), np.array([1.0]), np.array([1.0]), None)
    assert policy.w[0] > 3 * policy.w[1] > 0
    # A column no row has touched keeps the population's precision through the refits.
    assert policy.prior[2] == pytest.approx(2.0)
    again = QPolicy.from_dict(policy.to_dict())
    assert np.array_equal(again.population, policy.population)
    assert np.array_equal(again.w, policy.w)
    with pytest.raises(ValueError):
        QPolicy(3, cfg, population=np.array([1.0, 0.0, 1.0]))


def test_a_new_chat_policy_starts_from_the_shipped_population_prior(tmp_path, monkeypatch):
    import json

    from rlchat.learner import population
    from rlchat.learner.features import DIM, FEATURE_NAMES, FEATURE_VERSION
    from rlchat.learner.policy_store import new_policy

    shipped = json.loads(population.PRIOR_FILE.read_text())
    assert shipped["features"] == FEATURE_VERSION
    assert set(shipped["factors"]) == set(FEATURE_NAMES)
    policy = new_policy()
    expected = [policy.config.ridge * shipped["factors"][name] for name in FEATURE_NAMES]
    assert np.allclose(policy.prior, expected)
    assert len(set(np.round(policy.prior, 6))) > 3  # not one ridge for all
    # A file fitted on other features is not used: the ridge for every column.
    other = tmp_path / "prior.json"
    other.write_text(json.dumps({**shipped, "features": "v0"}))
    monkeypatch.setattr(population, "PRIOR_FILE", other)
    population.population_factors.cache_clear()
    try:
        assert np.all(new_policy().prior == policy.config.ridge)
        assert new_policy().dim == DIM
        # So is a damaged one (a factor that is not a positive number, or no JSON).
        for damaged in (json.dumps({**shipped, "factors": {"length": -1.0}}),
                        json.dumps({**shipped, "factors": ["length"]}), "{not json"):
            other.write_text(damaged)
            population.population_factors.cache_clear()
            assert np.all(new_policy().prior == policy.config.ridge)
    finally:
        population.population_factors.cache_clear()
