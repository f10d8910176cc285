"""Linear Q-learning over candidate features, with logged softmax exploration.

Q(s, a) = w . phi(s, a).  The weights are the ridge solution of a weighted
least-squares problem over every feedback row seen so far, with exponential
forgetting so that a drifting taste is followed:

    A <- lambda A + sum_i c_i x_i x_i^T,   b <- lambda b + sum_i c_i y_i x_i
    P  = (A + diag(alpha))^-1,             w = P b

P is inverted exactly every REFRESH_EVERY turns.  In between, a turn costs
O(d^2), not O(d^3): P <- P / lambda, then the turn's rows by the Woodbury
identity (Sherman-Morrison for all of them at once).
That update forgets the prior alpha along with the data, so until the next
exact inverse the penalty is up to lambda^REFRESH_EVERY smaller than stated
(0.96 at the default forgetting); the rows themselves are exact.

Forgetting may differ by column (`column_forgetting`, lambda_j): then the
certainty fades by column, A + alpha <- D (A + alpha) D with
D = diag(sqrt(lambda_j)), while the estimate stays where it was (b is reset
so that P b = w): the Kalman filter's covariance inflation, by column.  With
one factor for all it is the update above.  A column that forgets fast has
its weight rest on recent rows; one that does not keeps all its evidence:
for a taste that drifts in some features and holds in others.

A row x is either a candidate's phi with its reward as target, or a
preference: the difference phi(pick) - phi(passed over), the pick against
each candidate it beat (see learner/update.py).  A preference says which is
better, not by how much, so it is not given a target: it is a probit
observation, P(pick preferred) = Phi(Q difference / pair_margin), and enters
as the one Gaussian row (target, weight) that leaves the posterior of its Q
difference with the same mean and variance as the probit would (assumed
density filtering, as in TrueSkill), computed once, when it is learned.  A
preference the policy already holds with room to spare weighs next to
nothing; one it gets wrong weighs the most.  The prior is not
forgotten, so the problem stays well posed however long the stream.

The ridge is a prior, and not one for all columns.  Each column starts
from its base prior, the ridge times the column's population factor
(learner/population.py: how far that weight strays from 0 across many
users; without factors, the ridge for all).  Then at each exact inverse
every column's prior precision is fitted to the data so far (automatic
relevance determination: RELEVANCE_STEPS steps of MacKay's update, from the
posterior at hand): alpha_j = (gamma_j + a) / (w_j^2 + a / base_j), where
gamma_j = 1 - alpha_j P_jj is how much the data has determined w_j and
a = RELEVANCE_STRENGTH pseudo-observations tie it to the base prior.  A
column a taste lives in is then let grow and the rest are shrunk harder:
the weight of a one-letter taste goes to that letter's column rather than
being spread over the many columns that grow with length.  `relevance` off
keeps the base prior.

The target y of the candidate that continued the conversation becomes
r + gamma * max_a' Q(s', a') once the next turn's candidates are known.  That
only changes b (A already holds phi), so the bootstrap is an exact correction
of the earlier least-squares fit rather than a second sample.  The end of a
session is terminal: the pending action keeps y = r.

No I/O and no globals: deterministic given its inputs and the rng passed to
`rank`, so replaying stored turns reproduces the live weights bit for bit.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

# Turns between exact inverses of the regularised Gram matrix, each with a
# new fit of the columns' priors (see above): often enough that the priors
# follow the first turns of a taste; the turns in between stay O(d^2).
REFRESH_EVERY = 8
# Pseudo-observations of the base prior in each column's prior (see above):
# with none a column that the data has not determined yet could be shrunk to
# nothing; with many every column keeps its base prior.
RELEVANCE_STRENGTH = 1.0
# MacKay steps (each an exact inverse) per refresh: the priors move a step
# at a time, and a few per refresh let them keep up with the first turns.
RELEVANCE_STEPS = 4


@dataclass(frozen=True)
class PolicyConfig:
    """The learner's parameters and their defaults; what each means, and its
    range, is said once, in settings.LEARNER_PARAMETERS."""

    gamma: float = 0.5
    ridge: float = 4.0
    forgetting: float = 0.995
    temperature_floor: float = 0.002
    uncertainty: float = 0.005
    epsilon: float = 0.02
    pair_margin: float = 0.3
    relevance: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        """Settings as stored; fields this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class QPolicy:
    def __init__(
        self,
        dim: int,
        config: PolicyConfig | None = None,
        column_forgetting: np.ndarray | None = None,
        population: np.ndarray | None = None,
    ) -> None:
        self.dim = dim
        self.config = config or PolicyConfig()
        # Each column's prior precision before any data, as a factor of the
        # ridge (learner/population.py); None: the ridge for all.
        self.population = None
        if population is not None:
            factors = np.asarray(population, dtype=np.float64)
            if factors.shape != (dim,) or not np.all(np.isfinite(factors) & (factors > 0.0)):
                raise ValueError(f"population: {dim} positive factors expected")
            self.population = factors
        # lambda by column, in place of config.forgetting for all (see above)
        self.column_forgetting = None
        if column_forgetting is not None:
            lam = np.asarray(column_forgetting, dtype=np.float64)
            if lam.shape != (dim,) or not np.all((lam > 0.0) & (lam <= 1.0)):
                raise ValueError(f"column_forgetting: {dim} factors in (0, 1] expected")
            self.column_forgetting = lam
        self.A = np.zeros((dim, dim))
        self.b = np.zeros(dim)
        self.w = np.zeros(dim)
        self.prior = self.base_prior()  # alpha_j (see above)
        self.P = np.diag(1.0 / self.prior)  # (A + diag(prior))^-1, see REFRESH_EVERY
        self.since_exact = 0  # turns learned since P was last inverted exactly
        self.version = 0  # turns learned
        self.last_seq = 0  # sequence number of the last stored turn applied
        self.session: str | None = None  # session of the last turn applied
        self.pending: np.ndarray | None = None  # phi of the action awaiting its bootstrap
        self.generator: str | None = None  # the generator whose features it learned
        self.meaning: str | None = None  # the source of its meaning columns (embeddings)
        self.generator_switches = 0  # times it forgot the model features for a new one

    def base_prior(self) -> np.ndarray:
        """Each column's prior precision before any data: what relevance starts
        from and ties each column to."""
        ridge = float(self.config.ridge)
        return np.full(self.dim, ridge) if self.population is None else ridge * self.population

    # acting -------------------------------------------------------------
    def scores(self, phi: np.ndarray) -> np.ndarray:
        return phi @ self.w

    def explain(
        self, phi: np.ndarray, names: tuple[str, ...], top: int = 3
    ) -> list[list[tuple[str, float]]]:
        """Why the rows are in the order they are: for each row, its `top`
        feature contributions (value x weight) relative to the mean of all
        rows.  A contribution every row shares (the bias) says nothing about
        the order, so it comes out as zero and last."""
        contributions = np.asarray(phi, dtype=np.float64) * self.w
        relative = contributions - contributions.mean(axis=0)
        out = []
        for row in relative:
            biggest = np.argsort(-np.abs(row), kind="stable")[:top]
            out.append([(names[i], float(row[i])) for i in biggest])
        return out

    def uncertainty(self, phi: np.ndarray) -> np.ndarray:
        """Posterior sd of each row's Q (up to the noise scale): sqrt(phi P phi)."""
        # A matrix product, not einsum: it runs in BLAS, a tenth of the time.
        return np.sqrt(np.maximum(((phi @ self.P) * phi).sum(axis=1), 0.0))

    def temperature(self, phi: np.ndarray) -> float:
        """Explore more where the policy knows less: a floor plus the mean sd
        of each candidate's Q relative to the candidates' mean.  The order
        depends on differences only: what all candidates share (the bias, a
        column no candidate differs in) adds no doubt about it."""
        cfg = self.config
        centred = phi - phi.mean(axis=0) if len(phi) > 1 else phi
        return cfg.temperature_floor + cfg.uncertainty * float(np.mean(self.uncertainty(centred)))

    def first_probabilities(self, scores: np.ndarray, temperature: float) -> np.ndarray:
        """P(each candidate is placed first): softmax mixed with a uniform floor."""
        n = len(scores)
        z = (scores - scores.max()) / max(temperature, 1e-6)
        soft = np.exp(z)
        soft /= soft.sum()
        eps = self.config.epsilon
        return (1.0 - eps) * soft + eps / n

    def rank(
        self, phi: np.ndarray, rng: np.random.Generator
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(order of all candidates, P(placed first) by candidate, Q by candidate).

        The order is drawn Plackett-Luce style from the exploration
        distribution, so order[0] is a sample whose probability is logged:
        sorted by log-probability plus Gumbel noise, which draws each next
        place in proportion to the probabilities of those left (one draw for
        all places, not one per place).
        """
        phi = _finite(phi)
        scores = self.scores(phi)
        probs = self.first_probabilities(scores, self.temperature(phi))
        with np.errstate(divide="ignore"):  # a probability rounded to 0 goes last
            keys = np.log(probs) + rng.gumbel(size=len(probs))
        # Those rounded to 0 (possible without a uniform share, epsilon 0) by Q.
        order = [int(i) for i in np.lexsort((-scores, -keys))]
        return order, probs, scores

    # learning -----------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """The state to go back to if what follows cannot be stored.  Learning
        replaces arrays rather than changing them in place, so a shallow copy
        is enough."""
        return dict(self.__dict__)

    def restore(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def start_turn(self, session: str, phi_next: np.ndarray) -> None:
        """A new turn's candidates are known: a session change is terminal,
        otherwise the previous chosen action gets its bootstrap term."""
        if session != self.session:
            self.pending = None
            self.session = session
        if self.pending is None or len(phi_next) == 0:
            return
        gamma = self.config.gamma
        if gamma > 0:
            bound = 1.0 / (1.0 - gamma)
            value = float(np.clip(np.max(self.scores(phi_next)), -bound, bound))
            self.b = self.b + gamma * value * self.pending
            self._weights()
        self.pending = None

    def forget_columns(self, columns: list[int]) -> None:
        """Forget what was learned about these features (their weights, and
        their part of every stored row), keeping the rest: for features that
        now mean something else."""
        keep = np.ones(self.dim, dtype=bool)
        keep[columns] = False
        self.A = self.A * np.outer(keep, keep)
        self.b = self.b * keep
        self.prior = np.where(keep, self.prior, self.base_prior())
        self.pending = None
        self.generator_switches += 1
        self._solve(refit_prior=False)

    def learn(
        self,
        rows: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray,
        chosen: np.ndarray | None,
        preferences: np.ndarray | None = None,
        *,
        late: bool = False,
    ) -> None:
        """One turn of feedback: regression rows with their targets and
        weights; `preferences` marks the rows that are preferences (their
        targets are not read).  `late` rows come after the turn was learned
        (a thumb on an answered turn): they add to it, so nothing is
        forgotten for them and the bootstrap still waits for the next turn."""
        # Targets are clipped and anything non-finite counts as nothing learned.
        x = _finite(rows)
        y = np.clip(_finite(targets), -1.0, 1.0)
        c = np.clip(_finite(weights), 0.0, 1.0)
        if preferences is not None and np.any(preferences):
            y, c = self._as_observations(x, y, c, np.asarray(preferences, dtype=bool))
        if self.column_forgetting is None or late:
            # One factor: A, b and P's inverse all scale by it (the common
            # case, and the cheaper one); late rows fade nothing.
            fade: float | np.ndarray = 1.0 if late else float(self.config.forgetting)
            self.A = fade * self.A + (x * c[:, None]).T @ x
            self.b = fade * self.b + x.T @ (c * y)
        else:
            lam = self.column_forgetting
            root = np.sqrt(lam)
            fade = np.outer(root, root)  # what A and P's inverse are multiplied by
            # The prior as it stands: it fades with the data until the next exact inverse.
            ridge = self.prior * lam**self.since_exact
            scaled = root * self.w
            held = root * (self.A @ scaled + ridge * scaled)  # b with P' b = w: w held
            self.A = self.A * fade + (x * c[:, None]).T @ x
            self.b = held + x.T @ (c * y)
        if not late:  # since_exact counts the fades the prior in P has had
            self.since_exact += 1
        if self.since_exact >= REFRESH_EVERY or not self._update_inverse(x, c, fade):
            self._solve()
        if not late:
            self.pending = None if chosen is None else np.array(chosen, dtype=np.float64)
        self.version += 1

    def _as_observations(
        self, x: np.ndarray, y: np.ndarray, c: np.ndarray, preferences: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Targets and weights with the preferences as their Gaussian rows,
        all from the posterior before this turn."""
        rows = x[preferences]
        mean = rows @ self.w
        var = ((rows @ self.P) * rows).sum(axis=1)
        target, precision = probit_observation(mean, var, self.config.pair_margin)
        y, c = y.copy(), c.copy()
        y[preferences] = target
        c[preferences] = c[preferences] * precision  # a read weight tempers the likelihood
        return y, c

    def _solve(self, refit_prior: bool = True) -> None:
        """P and w exactly, from A, b and the prior (first fitted to the
        posterior, RELEVANCE_STEPS times, if relevance is on and there is data)."""
        steps = RELEVANCE_STEPS if refit_prior and self.config.relevance and self.version > 0 else 0
        for _ in range(steps):
            self.prior = self._relevance()
            self._invert()
        if not steps:
            self._invert()

    def _invert(self) -> None:
        # Statistics that overflowed (features of 1e5 and more, squared and
        # summed) make the matrix singular or not finite: the weights stay
        # as they were, as for a result that is not finite.
        try:
            P = np.linalg.inv(self.A + np.diag(self.prior))
        except np.linalg.LinAlgError:
            P = None
        w = P @ self.b if P is not None else None
        if P is not None and np.all(np.isfinite(w)) and np.all(np.isfinite(P)):
            self.P, self.w = P, w
        self.since_exact = 0

    def _relevance(self) -> np.ndarray:
        """Every column's prior precision, by MacKay's update from the
        current posterior (see the module's docstring)."""
        fade = self.column_forgetting
        if fade is None:
            fade = self.config.forgetting
        # The prior in P, faded with the data.  At a refresh P has not taken
        # in the turn being learned yet: the first step reads the posterior
        # before it (faded one turn more than it was: a step of forgetting).
        current = self.prior * fade**self.since_exact
        determined = np.clip(1.0 - current * np.diag(self.P), 0.0, 1.0)
        a = RELEVANCE_STRENGTH
        prior = (determined + a) / (self.w**2 + a / self.base_prior())
        return prior if np.all(np.isfinite(prior)) else self.prior

    def _update_inverse(self, x: np.ndarray, c: np.ndarray, fade: float | np.ndarray) -> bool:
        """P after forgetting and the turn's weighted rows, by the Woodbury
        identity (one m x m solve for m rows: the Sherman-Morrison steps of
        all rows at once); False (nothing changed) if it went wrong
        numerically."""
        P = self.P / fade
        U = np.sqrt(c[c > 0.0])[:, None] * x[c > 0.0]
        if len(U):
            PU = P @ U.T
            S = np.eye(len(U)) + U @ PU
            P = P - PU @ np.linalg.solve(S, PU.T)
            P = (P + P.T) / 2.0  # symmetric to the last bit, so errors cannot build up
        w = P @ self.b
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(P))):
            return False
        self.P, self.w = P, w
        return True

    def _weights(self) -> None:
        w = self.P @ self.b
        if np.all(np.isfinite(w)):
            self.w = w

    # persistence --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "config": asdict(self.config),
            "A": _pack(self.A),
            "b": self.b.tolist(),
            "w": self.w.tolist(),
            "P": _pack(self.P),
            "prior": self.prior.tolist(),
            "since_exact": self.since_exact,
            "version": self.version,
            "last_seq": self.last_seq,
            "session": self.session,
            "pending": None if self.pending is None else self.pending.tolist(),
            "generator": self.generator,
            "generator_switches": self.generator_switches,
            "meaning": self.meaning,
            "column_forgetting": (
                None if self.column_forgetting is None else self.column_forgetting.tolist()
            ),
            "population": None if self.population is None else self.population.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: PolicyConfig | None = None) -> QPolicy:
        """Restore a snapshot; `config` overrides the stored settings."""
        policy = cls(
            int(data["dim"]),
            config or PolicyConfig.from_dict(data["config"]),
            data["column_forgetting"],
            data["population"],
        )
        policy.A = _unpack(data["A"], (policy.dim, policy.dim))
        policy.b = np.array(data["b"], dtype=np.float64)
        # w follows from P and b: the stored w bit for bit.  P is stored
        # since it is updated incrementally; where it is null, or with
        # another ridge, it is inverted again.
        stored = PolicyConfig.from_dict(data["config"])
        if data["P"] is not None and stored.ridge == policy.config.ridge:
            policy.prior = np.array(data["prior"], dtype=np.float64)
            policy.P = _unpack(data["P"], (policy.dim, policy.dim))
            policy.since_exact = int(data["since_exact"])
            policy._weights()
        elif np.any(policy.A) or np.any(policy.b):
            policy._solve(refit_prior=False)  # the new ridge for all, refitted from there
        policy.version = int(data["version"])
        policy.last_seq = int(data["last_seq"])
        policy.session = data["session"]
        pending = data["pending"]
        policy.pending = None if pending is None else np.array(pending, dtype=np.float64)
        policy.generator = data["generator"]
        policy.generator_switches = int(data["generator_switches"])
        # Absent from snapshots of before the embeddings source: the generator's
        # hidden state filled the meaning columns, so their key was its key.
        policy.meaning = data.get("meaning", policy.generator)
        return policy


def _pack(matrix: np.ndarray) -> str:
    """A matrix as base64 of its float64 bytes: exact, and a fraction of the
    size and parsing time of a JSON list of numbers."""
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f8").tobytes()).decode("ascii")


def _unpack(value: str, shape: tuple[int, int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(value), dtype="<f8").reshape(shape).copy()


def probit_observation(
    mean: np.ndarray, var: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """(target, precision) of the Gaussian observation of f ~ N(mean, var)
    that leaves f with the mean and variance that the probit likelihood
    Phi(f / scale) (f > 0 was seen, through noise) would leave it."""
    total = np.maximum(scale * scale + var, 1e-12)
    z = mean / np.sqrt(total)
    # pdf(z) / cdf(z); past -30 the cdf underflows, and the ratio is -z there.
    ratio = np.array([
        -zi if zi < -30.0 else
        math.exp(-0.5 * zi * zi) / (math.sqrt(0.5 * math.pi) * math.erfc(-zi / math.sqrt(2.0)))
        for zi in z.tolist()
    ])
    alpha = ratio / np.sqrt(total)  # the mean moves by var * alpha
    beta = alpha * (alpha + mean / total)  # the variance shrinks by var^2 * beta
    informative = beta > 1e-12  # else (a preference held by far) it tells next to nothing
    safe = np.where(informative, beta, 1.0)
    precision = np.where(informative, beta / np.maximum(1.0 - var * beta, 1e-12), 0.0)
    target = np.where(informative, mean + alpha / safe, mean)
    return target, precision


def _finite(values: np.ndarray) -> np.ndarray:
    """The values as float64, anything non-finite as 0 (read-only use: the
    usual all-finite input comes back as it is, without nan_to_num's copy)."""
    array = np.asarray(values, dtype=np.float64)
    if np.isfinite(array).all():
        return array
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
