"""Small models and byte-level BPE tokenizers that need no model hub.

`rlchat init-model PATH` writes a GPT-2; `rlchat init-model --chat PATH` a
chat model: Llama's architecture with a ChatML chat template, as instruct
models ship.  The tests and benchmarks build theirs through the same
functions.  Each is trained for a few seconds on the dialogue text that
ships with the package: the GPT-2 speaks in `User:`/`Assistant:` lines and
ends a reply at a line break, the chat model answers inside the template,
over several lines, and ends its reply at the end-of-turn token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

EOS = "<|endoftext|>"
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
# ChatML, the template of SmolLM2-Instruct and Qwen2.5-Instruct among others.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def corpus_lines() -> list[str]:
    text = files("rlchat.learner").joinpath("corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def write_tiny_model(
    path: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 800,
    layers: int = 2,
    width: int = 64,
    heads: int = 2,
    context: int = 256,
    train_steps: int = 150,
    holdout: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a tokenizer and a briefly trained GPT-2 to `path` with save_pretrained.

    `holdout`: the corpus's last lines that neither the tokenizer nor the
    model sees (`corpus_lines()[-holdout:]`), for measuring it on unseen text.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from rlchat.learner.generator import quiet_transformers

    quiet_transformers()

    say = progress or (lambda _msg: None)
    out = Path(path).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    lines = corpus_lines()
    lines = lines[:-holdout] if holdout else lines

    say("training the tokenizer")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=1, special_tokens=[EOS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS,
        model_max_length=context,
    )

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=context, n_embd=width, n_layer=layers,
        n_head=heads, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)

    _train(model, tokenizer("\n".join(lines) + "\n")["input_ids"], train_steps, seed, say)
    say(f"saving to {out}")
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


def _train(model, ids: list[int], steps: int, seed: int, say: Callable[[str], None],
           window: int = 64) -> None:
    """A few AdamW steps of next-token prediction on random windows of `ids`."""
    import torch

    data = torch.tensor(ids, dtype=torch.long)
    window = min(window, len(data) - 1)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    say(f"training the model ({steps} steps)")
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(data) - window, (16,), generator=generator)
        batch = torch.stack([data[s : s + window] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if (step + 1) % 50 == 0:
            say(f"step {step + 1}/{steps}, loss {loss.item():.2f}")
    model.eval()


def chat_conversations(lines: list[str], per_conversation: int = 3) -> list[list[dict]]:
    """The corpus's exchanges as chat messages, a few exchanges a conversation.
    A reply of several sentences puts each on its own line, so that the model
    learns replies that span lines and end at the end-of-turn token only."""
    pairs = []
    for user, reply in zip(lines[0::2], lines[1::2], strict=False):
        user, reply = user.removeprefix("User:").strip(), reply.removeprefix("Assistant:").strip()
        reply = re.sub(r"(?<=[.!?:]) (?=[A-Z])", "\n", reply)
        pairs.append(({"role": "user", "content": user},
                      {"role": "assistant", "content": reply}))
    return [[message for pair in pairs[i:i + per_conversation] for message in pair]
            for i in range(0, len(pairs), per_conversation)]


def write_tiny_chat_model(
    path: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 800,
    layers: int = 2,
    width: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    context: int = 512,
    train_steps: int = 200,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a tokenizer with a chat template and a briefly trained Llama-style model."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from rlchat.learner.generator import quiet_transformers

    quiet_transformers()
    say = progress or (lambda _msg: None)
    out = Path(path).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    conversations = chat_conversations(corpus_lines())

    say("training the tokenizer")
    bpe = ByteLevelBPETokenizer()
    texts = [m["content"] for c in conversations for m in c] + ["system", "user", "assistant"]
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=[EOS, TURN_START, TURN_END])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=TURN_START, eos_token=TURN_END, unk_token=EOS,
        pad_token=EOS, model_max_length=context,
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=context, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    text = "".join(tokenizer.apply_chat_template(c, tokenize=False) for c in conversations)
    _train(model, tokenizer(text, add_special_tokens=False)["input_ids"], train_steps, seed, say)
    say(f"saving to {out}")
    tokenizer.save_pretrained(out)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # A chat model is meant to be sampled: servers that follow the generation
    # config (transformers serve) would otherwise decode greedily.
    model.generation_config.do_sample = True
    model.save_pretrained(out)
    return out
