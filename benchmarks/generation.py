"""Candidate generation speed and quality: the product's path against fp32 baselines.

A GPT-2 with the real 124M configuration and random weights (its timings are
the real model's), k = 4 and 8 candidates x 40 new tokens after a 100-token
prompt, median of --runs runs per path, all paths in this one run:

- sequential: k separate `generate` calls, float32
- batched: one `generate` with k return sequences, float32
- product: rlchat's decode loop (one float32 prompt pass shared by all rows,
  in-place cache) with its steps in the format `--dtype auto` picks on this
  machine; also with bfloat16 steps for reference

Stops are off so every path draws exactly 40 tokens.  A long chat: time to the
first token after an 800-token prompt run whole, and when it extends the
previous turn's prompt by a 40-token exchange (the cached part is not run
again).  Quality: the product
format's next-token distribution against float32 on random prompts (top-10
agreement and KL), for the random 124M model and for the trained tiny model.

Run: .venv/bin/python benchmarks/generation.py [--runs 5]
Ends by printing one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This folder holds a storage.py that would shadow the storage package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from learner.generator import quiet_transformers, set_threads  # noqa: E402
from learner.generator.decoding import sample_rows  # noqa: E402
from learner.generator.weights import apply_dtype, resolve_dtype  # noqa: E402
from learner.sampling import Sampling  # noqa: E402

NEW_TOKENS = 40
PROMPT_TOKENS = 100
LONG_PROMPT, EXCHANGE = 800, 40  # a long chat, and what one exchange adds to it
SAMPLING = Sampling(temperature=1.0, top_k=50, top_p=0.95)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_time(fn, runs: int) -> float:
    fn()  # warm-up: kernel selection and allocation are not what a turn pays
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hf_generate(model, prompt: torch.Tensor, k: int, batched: bool) -> None:
    kwargs = dict(
        do_sample=True, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
        temperature=SAMPLING.temperature, top_k=SAMPLING.top_k, top_p=SAMPLING.top_p,
        pad_token_id=0, attention_mask=torch.ones_like(prompt),
    )
    with torch.inference_mode():
        if batched:
            model.generate(prompt, num_return_sequences=k, **kwargs)
        else:
            for _ in range(k):
                model.generate(prompt, **kwargs)


def loop(formatted, prompt: list[int], k: int, first: list[float] | None = None,
         reuse=None, new_tokens: int = NEW_TOKENS):
    start = time.perf_counter()

    def on_step(rows, tokens) -> None:
        if first is not None and len(first) == 0:
            first.append(time.perf_counter() - start)

    return sample_rows(formatted.step_model, prompt, k, max_new_tokens=new_tokens,
                       sampling=SAMPLING, stop_ids=None, generator=torch.Generator().manual_seed(0),
                       on_step=on_step, prompt_model=formatted.prompt_model, reuse=reuse)


def first_token_s(formatted, prompt: list[int], k: int, runs: int, reuse=None) -> float:
    loop(formatted, prompt, k, reuse=reuse, new_tokens=1)
    firsts: list[float] = []
    for _ in range(runs):
        first: list[float] = []
        loop(formatted, prompt, k, first, reuse=reuse, new_tokens=1)
        firsts.append(first[0])
    return statistics.median(firsts)


@torch.inference_mode()
def agreement(reference, other, prompts: list[list[int]]) -> dict[str, float]:
    """Mean top-10 overlap and KL(reference || other) of the next-token distribution."""
    overlaps, kls = [], []
    for ids in prompts:
        x = torch.tensor([ids])
        p = reference(input_ids=x, logits_to_keep=1).logits[0, -1].float().log_softmax(-1)
        q = other(input_ids=x, logits_to_keep=1).logits[0, -1].float().log_softmax(-1)
        top_p, top_q = set(p.topk(10).indices.tolist()), set(q.topk(10).indices.tolist())
        overlaps.append(len(top_p & top_q) / 10)
        kls.append(float((p.exp() * (p - q)).sum()))
    return {"top10_agreement": round(statistics.mean(overlaps), 3),
            "kl_mean": float(f"{statistics.mean(kls):.3g}"), "kl_max": float(f"{max(kls):.3g}")}


def random_prompts(vocab: int, count: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(10, 120, (count,), generator=g).tolist()
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def tiny_quality(chosen: str, prompts: int) -> dict[str, dict[str, float]]:
    """The same check on the trained tiny model: peaked, language-like distributions."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from learner.tiny_model import corpus_lines, write_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        write_tiny_model(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        fp32 = AutoModelForCausalLM.from_pretrained(folder).eval()
    lines = corpus_lines()
    texts = ["\n".join(lines[i: i + 3]) for i in range(0, 3 * prompts, 3)]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    out = {}
    for name in sorted({chosen, "bfloat16"}):
        out[name] = agreement(fp32, apply_dtype(copy.deepcopy(fp32), name).step_model, ids)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quality-prompts", type=int, default=30)
    args = parser.parse_args(argv)
    quiet_transformers()
    set_threads()
    torch.manual_seed(0)
    chosen = resolve_dtype("auto")
    say(f"building a random GPT-2 124M; product steps in {chosen}; "
        f"threads {torch.get_num_threads()}")
    fp32 = GPT2LMHeadModel(GPT2Config()).eval()
    product = apply_dtype(copy.deepcopy(fp32), chosen)
    bf16 = apply_dtype(copy.deepcopy(fp32), "bfloat16")
    prompt = torch.randint(0, fp32.config.vocab_size, (1, PROMPT_TOKENS))
    ids = prompt[0].tolist()

    figures: dict = {"runs": args.runs, "new_tokens": NEW_TOKENS, "prompt_tokens": PROMPT_TOKENS,
                     "product_dtype": chosen, "threads": torch.get_num_threads()}
    for k in (4, 8):
        say(f"k={k}: sequential fp32")
        seq = median_time(lambda k=k: hf_generate(fp32, prompt, k, batched=False), args.runs)
        say(f"k={k}: batched fp32")
        batched = median_time(lambda k=k: hf_generate(fp32, prompt, k, batched=True), args.runs)
        say(f"k={k}: product loop in bfloat16")
        loop_bf16 = median_time(lambda k=k: loop(bf16, ids, k), args.runs)
        say(f"k={k}: product ({chosen})")
        prod = median_time(lambda k=k: loop(product, ids, k), args.runs)
        figures[f"k{k}"] = {
            "sequential_fp32_s": round(seq, 3),
            "batched_fp32_s": round(batched, 3),
            "loop_bf16_s": round(loop_bf16, 3),
            "product_s": round(prod, 3),
            "speedup_vs_sequential": round(seq / prod, 2),
            "speedup_vs_batched": round(batched / prod, 2),
        }
        say(f"  {figures[f'k{k}']}")
    say("time to first streamed token (k=4)")
    figures["first_token_s_k4"] = round(first_token_s(product, ids, 4, args.runs), 3)

    say(f"a long chat: first token after a {LONG_PROMPT}-token prompt, whole or extending "
        "the last prompt by one exchange")
    long_ids = torch.randint(0, fp32.config.vocab_size, (LONG_PROMPT,)).tolist()
    last_turn = loop(product, long_ids[:-EXCHANGE], 4, new_tokens=1).prompt_pass
    figures["long_chat"] = {
        "prompt_tokens": LONG_PROMPT, "new_tokens_in_prompt": EXCHANGE,
        "first_token_whole_prompt_s": round(first_token_s(product, long_ids, 4, args.runs), 3),
        "first_token_reused_prompt_s": round(
            first_token_s(product, long_ids, 4, args.runs, reuse=last_turn), 3),
    }
    say(f"  {figures['long_chat']}")

    say("quality against float32 (random 124M, then the trained tiny model)")
    prompts = random_prompts(fp32.config.vocab_size, args.quality_prompts, seed=1)
    figures["quality_random_124m"] = {chosen: agreement(fp32, product.step_model, prompts)}
    if chosen != "bfloat16":
        figures["quality_random_124m"]["bfloat16"] = agreement(fp32, bf16.step_model, prompts)
    figures["quality_tiny_trained"] = tiny_quality(chosen, args.quality_prompts)

    k4 = figures["k4"]
    figures["bars"] = {
        "product_k4_le_1s": k4["product_s"] <= 1.0,
        "speedup_vs_sequential_ge_5": k4["speedup_vs_sequential"] >= 5,
        "first_token_le_0_3s": figures["first_token_s_k4"] <= 0.3,
        "top10_agreement_ge_0_8": figures["quality_random_124m"][chosen]["top10_agreement"] >= 0.8,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
