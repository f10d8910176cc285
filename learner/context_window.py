"""Which part of a dialogue the prompt holds, and its token ids.

Each exchange is tokenized once, as a block, when it joins the dialogue.  When
the prompt outgrows its budget, the oldest exchanges leave together, down to
half the budget.  The prompts of the following turns then extend one another
again, so the generator reuses the previous turn's cache and runs only the new
exchange.  Cutting one line per turn instead would change the prompt's start
every turn, and every turn would run its whole prompt again.

The head (what the format puts first, with the system prompt) never leaves.
Nothing here grows with the length of the dialogue: a turn tokenizes only
its new exchange and the message.  Kept free of torch.
"""

from __future__ import annotations

from rlchat.learner.prompt_format import PromptFormat


class ContextWindow:
    """The newest exchanges of one dialogue that fit a token budget."""

    def __init__(self, prompt_format: PromptFormat, budget: int) -> None:
        self.format = prompt_format
        self.budget = max(budget, 8)
        self._system: str | None = None
        self._head: list[int] = []
        self._history: list[tuple[str, str]] = []  # the dialogue the blocks describe
        self._blocks: list[list[int]] = []  # token ids of each exchange
        self.start = 0  # first exchange in the prompt
        self._tokens = 0  # tokens of blocks[start:]

    def prompt(self, history: list[tuple[str, str]], message: str, system: str = "") -> list[int]:
        """Token ids of the prompt for `message` after `history`, under `system`."""
        if system != self._system:
            self.reset()
            self._system, self._head = system, self.format.head(system)
        self._follow(history)
        return self.fit(self.format.message(message))

    def add(self, block: list[int]) -> None:
        """An exchange joins the dialogue (as token ids)."""
        self._blocks.append(block)
        self._tokens += len(block)

    def fit(self, tail: list[int]) -> list[int]:
        """The kept exchanges followed by `tail`, evicting first if they outgrow the budget."""
        fixed = len(self._head) + len(tail)
        if self._tokens + fixed > self.budget:
            # Evict in one go, down to half the budget, so that the next turns
            # extend this prompt instead of cutting it again.
            while self.start < len(self._blocks) and self._tokens + fixed > self.budget // 2:
                self._tokens -= len(self._blocks[self.start])
                self.start += 1
        ids = self._head + [t for block in self._blocks[self.start:] for t in block] + tail
        # A message alone over the budget keeps its end, which leads into the reply.
        return ids if len(ids) <= self.budget else ids[-self.budget:]

    def reset(self) -> None:
        self._history, self._blocks, self.start, self._tokens = [], [], 0, 0

    def _follow(self, history: list[tuple[str, str]]) -> None:
        """Add the exchanges that are new since the last turn, or start over
        for another dialogue (a new or resumed session)."""
        seen = len(self._history)
        if len(history) < seen or history[:seen] != self._history:
            self.reset()
            seen = 0
        for user, reply in history[seen:]:
            self._history.append((user, reply))
            self.add(self.format.exchange(user, reply))
