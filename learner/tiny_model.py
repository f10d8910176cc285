"""A small GPT-2 and byte-level BPE tokenizer that need no model hub.

`rlchat init-model PATH` writes one; the tests and benchmarks build theirs
through the same function.  The model is trained for a few seconds on the
dialogue text that ships with the package, so that it speaks in turns and
ends its replies at a line break like a real chat model would.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

EOS = "<|endoftext|>"


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

    say(f"training the model ({train_steps} steps)")
    ids = torch.tensor(tokenizer("\n".join(lines) + "\n")["input_ids"], dtype=torch.long)
    window = min(64, context, len(ids) - 1)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(train_steps):
        starts = torch.randint(0, len(ids) - window, (16,), generator=generator)
        batch = torch.stack([ids[s : s + window] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if (step + 1) % 50 == 0:
            say(f"step {step + 1}/{train_steps}, loss {loss.item():.2f}")
    model.eval()

    say(f"saving to {out}")
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out
