"""The README's pictures of the app, rendered by the app itself.

The real app (store, agent, policy, screens) runs headless at 110x34 through
Textual's test pilot, as the snapshot tests run it; only the candidates are
written out here instead of sampled, so that the picture reads well and is
the same every time.  Each screen is saved as the SVG Textual exports.

Run from the repository root:  .venv/bin/python docs/pictures.py
Writes docs/images/chat.svg (a turn with its candidates) and
docs/images/learning.svg (F3 after 40 turns).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import numpy as np

from rlchat.learner.records import Candidate, Proposal
from rlchat.learner.sampling import Sampling
from rlchat.learner.settings import Settings
from rlchat.storage import Store
from rlchat.tui.app import RlchatApp
from rlchat.tui.widgets.prompt import PromptInput

SIZE = (110, 34)
IMAGES = Path(__file__).parent / "images"
REPLIES = {
    "What could I cook tonight?": [
        "A quick one: pasta with garlic, lemon and a handful of spinach.",
        "How about a curry? Onions, a tin of chickpeas, spices, rice.",
        "Shakshuka: eggs poached in a spiced tomato sauce, with bread.",
        "I'd order in.",
    ],
    "Something with lemon, please.": [
        "Lemon chicken: brown the thighs, add lemon juice and stock, simmer.",
        "Lemon pasta:\n- boil spaghetti\n- toss with butter, zest, juice and parmesan",
        "Lemon is sour.",
        "Grilled fish with lemon and herbs, and a green salad on the side.",
    ],
}
FILLER = ["Sure!", "Here is a longer answer, with a reason or two.", "Why do you ask?",
          "Try it and tell me how it went."]


class WrittenReplies:
    """A candidate source with written replies and fixed model signals."""

    identity = {"model": "written replies", "format": "", "dtype": ""}

    def __init__(self) -> None:
        self.sampling = Sampling()

    def propose(self, history, message: str, n: int, *, system: str = "", on_token=None,
                cancel=None) -> Proposal:
        rng = np.random.default_rng(len(history))
        texts = REPLIES.get(message, FILLER)[:n]
        return Proposal(
            candidates=[Candidate(text=t, logprob=-1.5 - 0.1 * i, tokens=len(t.split()),
                                  hidden=rng.standard_normal(16))
                        for i, t in enumerate(texts)],
            context_hidden=rng.standard_normal(16))


async def _turn(pilot, message: str, keys: tuple[str, ...]) -> None:
    app = pilot.app
    app.query_one(PromptInput).value = message
    await pilot.press("enter")
    await app.workers.wait_for_complete()
    await pilot.pause()
    if keys:
        await pilot.press(*keys)
        await app.workers.wait_for_complete()
        await pilot.pause()


async def render(data: Path) -> None:
    store = Store(data)
    app = RlchatApp(settings=Settings(model="written replies", samples=4), store=store, seed=0,
                    source_factory=lambda settings: WrittenReplies())
    try:
        async with app.run_test(size=SIZE) as pilot:
            await app.workers.wait_for_complete()
            app.query_one(PromptInput).cursor_blink = False
            await _turn(pilot, "What could I cook tonight?", ("3", "5"))
            await _turn(pilot, "Something with lemon, please.", ())
            await pilot.press("down", "down", "minus", "up", "up")
            await pilot.pause()
            (IMAGES / "chat.svg").write_text(app.export_screenshot(title="rlchat"))
            # A user who likes the longer answers, over 40 turns, for F3's plots.
            await pilot.press("ctrl+n")
            for i in range(40):
                await _turn(pilot, f"question {i}", ())
                shown = [c.text for c in app.flow.view.candidates]
                best = shown.index(max(shown, key=len)) + 1
                await pilot.press(str(best), "5" if i % 3 else "4")
                await app.workers.wait_for_complete()
            await pilot.press("f3")
            await pilot.pause()
            (IMAGES / "learning.svg").write_text(app.export_screenshot(title="rlchat: F3"))
    finally:
        store.close()


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(render(Path(tmp) / "data"))
    print(f"wrote {IMAGES / 'chat.svg'} and {IMAGES / 'learning.svg'}")


if __name__ == "__main__":
    main()
