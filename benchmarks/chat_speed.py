"""A chat model's speed: SmolLM2-135M-Instruct's architecture (Llama style:
30 layers, width 576, 9 query and 3 key/value heads, a 49,152-token
vocabulary) with random weights, prompted through a chat template by
rlchat's generator, in the format `--dtype auto` picks.  Random weights cost
what trained ones do.

Figures: the k = 8 turn (a ~100-token templated prompt, then 40 new tokens
per row), the prompt pass with its first token, and the cost of one more
token for all 8 rows.  Stops are off, so every row draws all 40 tokens.
`benchmarks/generation.py` runs this beside GPT-2 124M; run alone:

    .venv/bin/python benchmarks/chat_speed.py [--runs 3]

Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from rlchat.learner.generator import Generator, quiet_transformers, set_threads
from rlchat.learner.generator.decoding import sample_rows
from rlchat.learner.sampling import Sampling
from rlchat.learner.tiny_model import write_tiny_chat_model

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=True)
NEW_TOKENS, K = 40, 8
SAMPLING = Sampling(temperature=1.0, top_k=50, top_p=0.95)
HISTORY = [("hello there", "Hi! What would you like to talk about today?"),
           ("what should I cook tonight?",
            "Something quick: pasta with garlic, olive oil and a little lemon."),
           ("I am tired today", "Sorry to hear that.\nDid you sleep badly, or was it a long day?")]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def chat_figures(runs: int = 3, dtype: str = "auto") -> dict:
    quiet_transformers()
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_chat_model(folder, train_steps=1)  # its tokenizer and chat template
        tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(**SMOLLM2_135M, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    generator = Generator(tokenizer, model, dtype=dtype, max_new_tokens=NEW_TOKENS, seed=0)
    load_s = time.perf_counter() - start
    prompt = generator.prompt_ids(HISTORY, "it was a long day at work", "You are kind.")

    def turn(new_tokens: int) -> float:
        began = time.perf_counter()
        sample_rows(generator.model, prompt, K, max_new_tokens=new_tokens, sampling=SAMPLING,
                    stop_ids=None, generator=torch.Generator().manual_seed(0),
                    prompt_model=generator.prompt_model)
        return time.perf_counter() - began

    turn(NEW_TOKENS)  # warm-up
    whole, first = [], []
    for _ in range(runs):
        whole.append(turn(NEW_TOKENS))
        first.append(turn(1))
    turn_s, first_s = statistics.median(whole), statistics.median(first)
    figures = {
        "architecture": "SmolLM2-135M-Instruct (Llama), random weights",
        "parameters_m": round(params / 1e6, 1), "dtype": generator.dtype,
        "format": generator.format.name, "prompt_tokens": len(prompt), "k": K,
        "new_tokens": NEW_TOKENS, "format_s": round(load_s, 2),
        "turn_k8_s": round(turn_s, 3), "first_token_s": round(first_s, 3),
        "step_k8_ms": round(1000 * (turn_s - first_s) / (NEW_TOKENS - 1), 2),
    }
    say(f"  chat model: {figures}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    set_threads()
    print(json.dumps(chat_figures(args.runs)))


if __name__ == "__main__":
    main()
