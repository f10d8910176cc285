"""How long the real model's replies run, to choose the chat default of
--max-new-tokens from measurement: for each cap, the share of candidates
that end on their own (at the end-of-turn token) and the turn's time.

SmolLM2-135M-Instruct (the real model, fetched once), k = 8 candidates to
--messages of benchmarks/real_messages.py's messages (spread over its
topics), drawn once with a cap of --longest tokens.  A row's tokens up to any
smaller cap are the same draws (one seed per turn), so the one run gives each
cap's share of ended rows exactly, and its turn time as the time the turn
reached that step (or ended).  Every turn runs its whole prompt, as a first
turn does; the loop drops rows as they end.

    .venv/bin/python benchmarks/reply_length.py [--messages 24] [--longest 384]

Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from real_messages import MESSAGES  # noqa: E402  (beside this file)
from real_model import real_files, say  # noqa: E402

CAPS = (64, 96, 128, 160, 192, 256, 320, 384)
K = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=24)
    parser.add_argument("--longest", type=int, default=384)
    args = parser.parse_args()
    import torch

    from rlchat.learner.generator import Generator
    from rlchat.learner.generator.decoding import sample_rows

    _, folder = real_files()
    generator = Generator.load(str(folder), seed=0, max_new_tokens=args.longest)
    step = max(1, len(MESSAGES) // args.messages)
    messages = MESSAGES[::step][: args.messages]
    lengths: list[int | None] = []  # a row's tokens up to its end (None: past --longest)
    reached: list[list[float]] = []  # per turn: seconds when each step was done
    chars: list[int] = []
    began = time.perf_counter()
    for i, message in enumerate(messages):
        say(f"  message {i + 1} of {len(messages)}")
        ids = generator.prompt_ids([], message)
        times: list[float] = []
        start = time.perf_counter()
        rows = sample_rows(generator.model, ids, K, max_new_tokens=args.longest,
                           sampling=generator.sampling, stop_ids=generator._stop_ids,
                           generator=torch.Generator().manual_seed(i),
                           on_step=lambda r, t, times=times, start=start: times.append(
                               time.perf_counter() - start),
                           prompt_model=generator.prompt_model)
        times.append(time.perf_counter() - start)
        for tokens in rows.tokens:
            reply = generator._reply_tokens(tokens)
            lengths.append(len(reply) if len(reply) < len(tokens) else None)
            chars.append(len(generator.tokenizer.decode(reply, skip_special_tokens=True)))
        reached.append(times)
    figures: dict = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "dtype": generator.dtype, "messages": len(messages), "k": K,
                     "candidates": len(lengths), "longest": args.longest,
                     "mean_chars": round(statistics.mean(chars)), "caps": {}}
    for cap in (c for c in CAPS if c <= args.longest):
        ended = sum(1 for n in lengths if n is not None and n < cap) / len(lengths)
        # The turn at this cap: done when its last row ended or at step `cap`.
        turns = [steps[min(cap, len(steps)) - 1] for steps in reached]
        figures["caps"][str(cap)] = {"ended_share": round(ended, 3),
                                     "turn_s_median": round(statistics.median(turns), 2),
                                     "turn_s_mean": round(statistics.mean(turns), 2)}
        say(f"  cap {cap}: {figures['caps'][str(cap)]}")
    figures["total_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
