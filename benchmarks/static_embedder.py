"""A static distillation of a sentence model, measured against the model
itself in benchmarks/tastes.py --real (variant embeddings_static): it meets
the 30 ms turn budget by far (about 3 ms) but gave the meaning tastes
nothing, so the product does not offer it (CHANGELOG.md, Unreleased)."""

from __future__ import annotations

import numpy as np

from rlchat.learner.embeddings import SentenceEmbedder, unit_rows


class StaticEmbedder:
    """A sentence model distilled to one vector per token (as model2vec
    does): each vocabulary token run through the model once, alone between
    its special tokens, mean pooled; a text is then the mean of its tokens'
    vectors, the whole text read, in about a millisecond.  The table is
    computed once per model (tens of seconds on 2 cores) and cached."""

    def __init__(self, model: SentenceEmbedder, progress=None) -> None:
        from rlchat.storage.paths import default_cache_dir

        self.tokenizer = model.tokenizer
        self.identity = f"static:{model.identity.removeprefix('local:')}"
        path = default_cache_dir() / "embeddings" / f"{self.identity.replace(':', '-')}.npy"
        if path.exists():
            self.table = np.load(path)
        else:
            self.table = _distil(model, progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part.npy")
            np.save(partial, self.table)
            partial.replace(path)
        self._special = np.array(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = []
        for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids = np.asarray(ids, dtype=np.int64)
            ids = ids[~np.isin(ids, self._special) & (ids < len(self.table))]
            rows.append(self.table[ids].mean(0) if len(ids) else np.zeros(self.table.shape[1]))
        return unit_rows(np.vstack(rows).astype(np.float64))


def _distil(model: SentenceEmbedder, progress=None) -> np.ndarray:
    torch = model._torch
    tokenizer = model.tokenizer
    size = len(tokenizer)
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    table = np.zeros((size, model.model.config.hidden_size), dtype=np.float32)
    step = 512
    for start in range(0, size, step):
        ids = torch.arange(start, min(start + step, size)).unsqueeze(1)
        parts = [ids]
        if first is not None:
            parts.insert(0, torch.full_like(ids, first))
        if last is not None:
            parts.append(torch.full_like(ids, last))
        batch = torch.cat(parts, dim=1)
        with torch.inference_mode():
            hidden = model.model(input_ids=batch,
                                 attention_mask=torch.ones_like(batch)).last_hidden_state
        table[start:start + len(ids)] = hidden.mean(1).float().numpy()
        if progress is not None:
            progress(f"distilling the embedding model: {min(start + step, size)}/{size} tokens")
    return table
