"""Candidates from a served model against the local decode loop, same CPU,
same architecture: SmolLM2-135M-Instruct's configuration with random
weights, in rlchat's local format and as GGUF files (Q8_0 and F16) served
by llama.cpp's llama-server (built by .ci/llama-server.sh).

Figures, median of --runs, a k = 8 turn of 40 tokens after a short chat:
- rlchat local (`--dtype auto`);
- llama-server through rlchat with n = 8 in one request;
- llama-server through rlchat with 8 separate requests side by side;
- the first streamed token of each;
- the time rlchat's client adds over a bare HTTP request of the same body
  (and the server's own timings, where it reports them).

Then the protocol checks, through the headless protocol's handler, 20 turns
each with the tiny chat model: llama-server (one sampling request per turn,
log-prob features present, the stored prompt the server's rendering) and
`transformers serve` (8 requests per turn, no log-probs, no error).

    .venv/bin/python benchmarks/remote.py [--runs 5]

Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from chat_speed import HISTORY, SMOLLM2_135M  # noqa: E402

from rlchat.learner.features import FEATURE_NAMES  # noqa: E402
from rlchat.learner.remote import RemoteGenerator  # noqa: E402
from rlchat.learner.remote.capabilities import PATHS  # noqa: E402
from rlchat.testkit.servers import (  # noqa: E402
    llama_dir,
    llama_server,
    to_gguf,
    transformers_server,
)

NEW_TOKENS, K = 40, 8
MESSAGE, SYSTEM = "it was a long day at work", "You are kind."


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(propose) -> tuple[float, float]:
    """(whole turn, first streamed token) in seconds."""
    first: list[float] = []
    began = time.perf_counter()

    def on_token(row: int, text: str) -> None:
        if not first:
            first.append(time.perf_counter() - began)

    propose(on_token)
    return time.perf_counter() - began, (first[0] if first else float("nan"))


def median_of(runs: int, propose) -> dict:
    timed(propose)  # warm-up
    whole, first = zip(*(timed(propose) for _ in range(runs)), strict=True)
    return {"turn_s": round(statistics.median(whole), 3),
            "first_token_s": round(statistics.median(first), 3)}


def write_model(folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlchat.learner.tiny_model import write_tiny_chat_model

    write_tiny_chat_model(folder, train_steps=1)  # its tokenizer and chat template
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(**SMOLLM2_135M, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).eval().save_pretrained(folder)


def local_figures(folder: Path, runs: int) -> dict:
    from rlchat.learner.generator import Generator, set_threads

    set_threads()
    generator = Generator.load(str(folder), max_new_tokens=NEW_TOKENS, seed=0)
    figures = median_of(runs, lambda cb: generator.propose(HISTORY, MESSAGE, K, system=SYSTEM,
                                                           on_token=cb))
    return {**figures, "dtype": generator.dtype}


def served_figures(server, runs: int) -> dict:
    remote = RemoteGenerator(server.base_url, "smol", max_new_tokens=NEW_TOKENS, seed=0)
    caps = remote.connect()
    n8 = median_of(runs, lambda cb: remote.propose(HISTORY, MESSAGE, K, system=SYSTEM,
                                                    on_token=cb))
    requests_n8 = remote.last_requests
    separate = RemoteGenerator(server.base_url, "smol", max_new_tokens=NEW_TOKENS, seed=0)
    separate.connect()
    separate.capabilities = dataclasses.replace(separate.capabilities, n_choices=False)
    apart = median_of(runs, lambda cb: separate.propose(HISTORY, MESSAGE, K, system=SYSTEM,
                                                         on_token=cb))
    # A bare request of the same body: the server's time plus HTTP, no client.
    body = remote._body(caps, HISTORY, MESSAGE, SYSTEM)
    body.update(n=K, seed=1)
    bare, server_ms = [], []
    for _ in range(runs + 1):
        began = time.perf_counter()
        answer = httpx.post(server.base_url + PATHS[caps.endpoint], json=body, timeout=600).json()
        bare.append(time.perf_counter() - began)
        timings = answer.get("timings") or {}
        if timings:
            server_ms.append(timings.get("prompt_ms", 0) + timings.get("predicted_ms", 0))
    bare_s = statistics.median(bare[1:])
    remote.close()
    separate.close()
    return {
        "n8": {**n8, "requests": requests_n8},
        "separate8": {**apart, "requests": separate.last_requests},
        "bare_request_s": round(bare_s, 3),
        "server_timings_s": round(statistics.median(server_ms) / 1000, 3) if server_ms
        else None,
        "client_overhead": round(n8["turn_s"] / bare_s - 1, 3),
        "capabilities": {k: v for k, v in caps.to_dict().items() if k != "models"},
    }


def protocol_figures(settings_kw: dict, data_dir: Path, turns: int) -> dict:
    """`turns` say + choose through the headless handler; per turn: sampling
    requests, log-prob features, the stored prompt."""
    import numpy as np

    from rlchat.learner.agent import Agent, load_source
    from rlchat.learner.records import Turn
    from rlchat.learner.settings import Settings
    from rlchat.storage import Store
    from rlchat.tui.headless import handle_line

    settings = Settings(candidates=4, samples=8, **settings_kw)
    agent = Agent(Store(data_dir), load_source(settings, seed=1), settings, seed=1)
    requests, errors = [], []
    for turn in range(turns):
        answer = handle_line(agent, json.dumps({"op": "say", "text": f"tell me more {turn}"}))
        if not answer["ok"]:
            errors.append(answer["error"]["code"])
            continue
        requests.append(agent.source.last_requests)
        pick = answer["candidates"][0]["id"]
        handle_line(agent, json.dumps({"op": "choose", "turn": answer["turn"], "id": pick,
                                       "rating": 4}))
    stored = list(agent.store.turns())
    logprob = FEATURE_NAMES.index("logprob")
    agent.store.close()
    # Features live in the store's binary blob: read each turn back whole.
    with_logprob = sum(bool(np.any(Turn.from_dict(r).features()[:, logprob] != 0))
                       for r in stored)
    return {
        "turns": len(stored), "errors": errors,
        "sampling_requests_per_turn": sorted(set(requests)),
        "logprob_features": with_logprob,
        "prompt_stored": sum(bool(r.get("prompt")) for r in stored),
        "messages_stored": sum(bool(r.get("messages")) for r in stored),
        "chat_template_prompts": sum((r.get("prompt") or "").startswith("<|im_start|>")
                                     for r in stored),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    if llama_dir() is None:
        sys.exit("llama-server is not built: run .ci/llama-server.sh first")
    import torch

    out: dict = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "k": K,
                 "new_tokens": NEW_TOKENS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = tmp_path / "smol"
        say("writing SmolLM2-135M-Instruct's architecture with random weights")
        write_model(model)
        say("rlchat local")
        out["local"] = local_figures(model, args.runs)
        say(f"  {out['local']}")
        for kind in ("q8_0", "f16"):
            say(f"llama-server {kind}")
            gguf = to_gguf(model, tmp_path / f"smol-{kind}.gguf", kind)
            extra: tuple[str, ...] = ()
            server = llama_server(gguf, tmp_path / f"{kind}.log", context=8 * 1024,
                                  alias="smol")
            try:
                server.start()
            except RuntimeError:  # seen here: Q8_0 weight repacking crashes on AMX CPUs
                server.stop()
                extra = ("--no-repack",)
                server = llama_server(gguf, tmp_path / f"{kind}-b.log", context=8 * 1024,
                                      alias="smol", extra=extra)
                server.start()
            try:
                out[f"llama_{kind}"] = {**served_figures(server, args.runs),
                                        "server_flags": list(extra)}
            finally:
                server.stop()
            say(f"  {out[f'llama_{kind}']}")
        say("protocol: tiny chat model")
        from rlchat.learner.tiny_model import write_tiny_chat_model

        tiny = write_tiny_chat_model(tmp_path / "tiny")
        server = llama_server(to_gguf(tiny, tmp_path / "tiny.gguf"), tmp_path / "tiny.log")
        server.start()
        try:
            out["headless_llama"] = protocol_figures(
                {"model": "tinychat", "base_url": server.base_url}, tmp_path / "d1", args.turns)
        finally:
            server.stop()
        say(f"  {out['headless_llama']}")
        server = transformers_server(tiny, tmp_path / "ts.log").start()
        try:
            out["headless_transformers_serve"] = protocol_figures(
                {"model": str(tiny), "base_url": server.base_url}, tmp_path / "d2", args.turns)
        finally:
            server.stop()
        say(f"  {out['headless_transformers_serve']}")
    local = out["local"]["turn_s"]
    out["ratios_to_local"] = {kind: round(out[f"llama_{kind}"]["n8"]["turn_s"] / local, 3)
                              for kind in ("q8_0", "f16")}
    out["bars"] = {
        "client_overhead_le_10pct": all(out[f"llama_{k}"]["client_overhead"] <= 0.10
                                        for k in ("q8_0", "f16")),
        "llama_one_request_per_turn": out["headless_llama"]["sampling_requests_per_turn"] == [1],
        "transformers_serve_8_requests": out["headless_transformers_serve"][
            "sampling_requests_per_turn"] == [8],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
