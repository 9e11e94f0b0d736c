"""Search strategies over any `SearchSpace`, in ask/tell form.

`ask()` proposes an architecture, `tell(arch, score)` reports its score (higher is better). A
strategy is a deterministic function of its seed and of the scores it is told, so a search
resumes by replaying its trials.jsonl (cvjax/nas/search.py): nothing else has to be saved.

Every proposal passes `accept` (validity in the space and the search's params/GMACs limits);
rejected proposals are redrawn, so constraints never cost a query.

- `RandomSearch`: uniform samples (Li & Talwalkar 2019's strong baseline).
- `RegularizedEvolution`: Real et al. 2019, Algorithm 1 — a population of `population`
  architectures, initialized at random; each step samples `sample_size` of them, mutates the best
  (one decision changed) and replaces the *oldest* member with the child (aging).
- `Reinforce`: a policy of independent softmaxes, one per decision (the factorized policy NB201
  used for its REINFORCE baseline; Zoph & Le 2017 used an RNN over the same decisions), trained
  by REINFORCE (Williams 1992) with an exponential-moving-average baseline and Adam.
"""

import abc
import collections
from collections.abc import Callable

import numpy as np

from cvjax.errors import UserError, unknown_name
from cvjax.nas.spaces import SearchSpace

Accept = Callable[[str], bool]
_MAX_REJECTIONS = 100_000


class Strategy(abc.ABC):
    def __init__(self, space: SearchSpace, rng: np.random.Generator, accept: Accept | None = None):
        self.space, self.rng = space, rng
        self.accept = accept or space.is_valid

    @abc.abstractmethod
    def ask(self) -> str:
        """The next architecture to evaluate."""

    def tell(self, arch: str, score: float) -> None:  # noqa: B027 (optional hook)
        """The score of an architecture `ask` returned (default: nothing to learn)."""

    def _draw(self, propose: Callable[[], str]) -> str:
        for _ in range(_MAX_REJECTIONS):
            arch = propose()
            if self.accept(arch):
                return arch
        raise UserError(
            f"no architecture of space {self.space.name!r} met the constraints in "
            f"{_MAX_REJECTIONS:,} proposals; raise --config.search.max_params / max_gmacs"
        )


class RandomSearch(Strategy):
    def ask(self) -> str:
        return self._draw(lambda: self.space.sample(self.rng))


class RegularizedEvolution(Strategy):
    def __init__(
        self,
        space: SearchSpace,
        rng: np.random.Generator,
        accept: Accept | None = None,
        population: int = 10,
        sample_size: int = 3,
    ):
        super().__init__(space, rng, accept)
        if not 1 <= sample_size <= population:
            raise UserError(
                f"evolution needs 1 <= sample_size ({sample_size}) <= population ({population}); "
                "fix --config.search.sample_size"
            )
        self.population_size, self.sample_size = population, sample_size
        self.population: collections.deque[tuple[str, float]] = collections.deque()

    def ask(self) -> str:
        if len(self.population) < self.population_size:
            return self._draw(lambda: self.space.sample(self.rng))
        picks = self.rng.choice(len(self.population), self.sample_size, replace=False)
        # Ties go to the earliest sampled, so the choice depends on the RNG alone.
        parent = max((self.population[int(i)] for i in picks), key=lambda member: member[1])[0]
        return self._draw(lambda: self.space.mutate(parent, self.rng))

    def tell(self, arch: str, score: float) -> None:
        self.population.append((arch, score))
        if len(self.population) > self.population_size:
            self.population.popleft()  # Aging: the oldest goes, however good.


class Reinforce(Strategy):
    def __init__(
        self,
        space: SearchSpace,
        rng: np.random.Generator,
        accept: Accept | None = None,
        learning_rate: float = 0.05,
        baseline_decay: float = 0.9,
    ):
        super().__init__(space, rng, accept)
        self.logits = [np.zeros(n) for n in space.cardinalities()]
        self.learning_rate, self.baseline_decay = learning_rate, baseline_decay
        self.baseline: float | None = None
        # Adam (Kingma & Ba 2015) state, one moment pair per decision.
        self._m = [np.zeros(n) for n in space.cardinalities()]
        self._v = [np.zeros(n) for n in space.cardinalities()]
        self._t = 0

    def probabilities(self) -> list[np.ndarray]:
        out = []
        for logits in self.logits:
            p = np.exp(logits - logits.max())
            out.append(p / p.sum())
        return out

    def ask(self) -> str:
        probs = self.probabilities()

        def propose() -> str:
            return self.space.from_choices([int(self.rng.choice(len(p), p=p)) for p in probs])

        return self._draw(propose)

    def tell(self, arch: str, score: float) -> None:
        if self.baseline is None:
            self.baseline = score  # The first reward sets the baseline: no update from it.
            return
        advantage = score - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * score
        choices = self.space.to_choices(arch)
        self._t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for d, (choice, p) in enumerate(zip(choices, self.probabilities(), strict=True)):
            grad = -p * advantage  # Ascent on advantage * log pi(choice).
            grad[choice] += advantage
            self._m[d] = b1 * self._m[d] + (1 - b1) * grad
            self._v[d] = b2 * self._v[d] + (1 - b2) * grad**2
            m_hat = self._m[d] / (1 - b1**self._t)
            v_hat = self._v[d] / (1 - b2**self._t)
            self.logits[d] += self.learning_rate * m_hat / (np.sqrt(v_hat) + eps)


STRATEGIES = {"random": RandomSearch, "evolution": RegularizedEvolution, "reinforce": Reinforce}


def create_strategy(
    name: str,
    space: SearchSpace,
    seed: int,
    accept: Accept | None = None,
    **kwargs,
) -> Strategy:
    """`name` in STRATEGIES, seeded; kwargs are the strategy's own (population, learning_rate)."""
    if name not in STRATEGIES:
        raise unknown_name("search strategy", name, [*STRATEGIES, "darts"])
    return STRATEGIES[name](space, np.random.default_rng(seed), accept, **kwargs)
