"""jaxbasics.prior's TransformerPrior in eager PyTorch, and its KV-cache sampling loop.

The same function as :class:`jaxbasics.prior.TransformerPrior` (pre-norm blocks, exact GELU,
LayerNorm epsilon 1e-5, a class start token, row + column position embeddings), with its
weights copied from a Flax model by :func:`from_flax`. :func:`sample` is the eager loop a
PyTorch user would write: one Python iteration per code, keys and values written in place
into a preallocated cache. It is the baseline of the compiled :func:`jaxbasics.prior.sample`.

Only the parity test and benchmarks import this file; torch is never a dependency of
``jaxbasics``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.fc_1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc_2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x, cache, start):
        """Tokens at positions start..start+T-1; writes their keys and values into ``cache``,
        this block's (keys, values).

        With an int ``start`` attention reads the cache's filled prefix (eager PyTorch). With
        a 0-d tensor it reads all N positions under the causal mask, shapes that do not change
        with the position, so ``torch.compile`` builds one graph for every decoding step.
        """
        b, t, dim = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        keys, values = cache
        positions = start + torch.arange(t, device=x.device)
        keys[:, :, positions] = k
        values[:, :, positions] = v
        end = keys.shape[2] if torch.is_tensor(start) else start + t
        visible = torch.arange(end, device=x.device)[None, :] <= positions[:, None]
        attn = F.scaled_dot_product_attention(
            q, keys[:, :, :end], values[:, :, :end], attn_mask=visible
        )
        return self._rest(x, attn)

    def bidirectional(self, x):
        """Every token sees every other, no cache: the masked prior's block."""
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self._rest(x, F.scaled_dot_product_attention(q, k, v))

    def _rest(self, x, attn):
        b, t, dim = x.shape
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, dim))
        return x + self.fc_2(F.gelu(self.fc_1(self.ln_2(x))))


class TransformerPrior(nn.Module):
    def __init__(
        self, num_codes, height, width, num_classes=0, dim=256, depth=8, heads=8, mlp_ratio=4
    ):
        super().__init__()
        self.num_codes, self.height, self.width = num_codes, height, width
        self.num_classes, self.dim, self.depth, self.heads = num_classes, dim, depth, heads
        self.code_embed = nn.Embedding(num_codes, dim)
        self.class_embed = nn.Embedding(num_classes + 1, dim)
        self.row_embed = nn.Embedding(height, dim)
        self.col_embed = nn.Embedding(width, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes)

    def init_cache(self, batch):
        """One (keys, values) pair of (B, heads, N, dh) per block: as in the Flax prior, and as
        ``torch.compile`` copied a whole stacked (depth, ...) cache at every write to a layer."""
        shape = (batch, self.heads, self.height * self.width, self.dim // self.heads)
        device = self.head.weight.device
        return [
            (torch.zeros(shape, device=device), torch.zeros(shape, device=device))
            for _ in range(self.depth)
        ]

    def _labels(self, labels, batch):
        if labels is None:
            return torch.full((batch,), self.num_classes, device=self.head.weight.device)
        return labels.long()

    def _run(self, prev, start, labels, cache):
        """Logits (B, T, K) of the codes at positions start..start+T-1."""
        positions = start + torch.arange(prev.shape[1], device=prev.device)
        start_token = self.class_embed(labels)[:, None]
        tokens = torch.where((positions == 0)[None, :, None], start_token, self.code_embed(prev))
        x = (
            tokens
            + self.row_embed(positions // self.width)
            + self.col_embed(positions % self.width)
        )
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            x = block(x, layer_cache, start)
        return self.head(self.ln_f(x))

    def forward(self, codes, labels=None):
        """(B, h, w) long codes -> (B, h, w, K) logits."""
        b = codes.shape[0]
        flat = codes.reshape(b, -1).long()
        prev = F.pad(flat[:, :-1], (1, 0))
        logits = self._run(prev, 0, self._labels(labels, b), self.init_cache(b))
        return logits.reshape(b, self.height, self.width, self.num_codes)

    def decode_step(self, cache, prev, position, labels=None):
        """(B, K) logits of the code at ``position``; ``prev`` is the code at position - 1."""
        labels = self._labels(labels, len(prev))
        return self._run(prev.long()[:, None], position, labels, cache)[:, 0]


def from_flax(prior) -> TransformerPrior:
    """A PyTorch copy of a Flax ``jaxbasics.prior.TransformerPrior``, weights included."""
    sizes = ("num_codes", "height", "width", "num_classes", "dim", "depth", "heads", "mlp_ratio")
    model = TransformerPrior(*(getattr(prior, name) for name in sizes))
    copy_blocks(model, prior, ("code_embed", "class_embed", "row_embed", "col_embed"))
    return model.eval()


def copy_blocks(model, prior, embeddings) -> None:
    """Copy a Flax prior's ``embeddings``, blocks, ``ln_f`` and ``head`` into ``model``.

    Linear kernels are (in, out) in Flax and ``weight`` (out, in) in PyTorch: transposed.
    """

    def tensor(variable):
        return torch.from_numpy(np.array(variable[...]))

    names = ["ln_1", "qkv", "proj", "ln_2", "fc_1", "fc_2"]
    pairs = [(getattr(model, n), getattr(prior, n)) for n in ("ln_f", "head")]
    for tb, fb in zip(model.blocks, prior.blocks, strict=True):
        pairs += [(getattr(tb, n), getattr(fb, n)) for n in names]
    with torch.no_grad():
        for name in embeddings:
            getattr(model, name).weight.copy_(tensor(getattr(prior, name).embedding))
        for t, f in pairs:
            weight = tensor(f.scale) if isinstance(t, nn.LayerNorm) else tensor(f.kernel).T
            t.weight.copy_(weight)
            t.bias.copy_(tensor(f.bias))


@torch.inference_mode()
def sample(
    model, n, generator, *, labels=None, temperature=1.0, top_k=None, guidance=0.0, decode_step=None
):
    """(n, h, w) long codes drawn code by code with a KV cache: the eager twin of
    ``jaxbasics.prior.sample`` (same temperature, top-k and guidance rules).

    ``generator`` lives on the model's device. ``decode_step``, e.g.
    ``torch.compile(model.decode_step)``, replaces the eager step and gets each position as
    a tensor."""
    num, device = model.height * model.width, model.head.weight.device
    if guidance > 0:
        labels = torch.cat([labels, torch.full((n,), model.num_classes, device=device)])
    batch = 2 * n if guidance > 0 else n
    cache, prev = model.init_cache(batch), torch.zeros(batch, dtype=torch.long, device=device)
    codes = torch.zeros(n, num, dtype=torch.long, device=device)
    decode = model.decode_step if decode_step is None else decode_step
    for i in range(num):
        # A tensor position keeps a compiled step's shapes fixed: one graph for all positions.
        position = i if decode_step is None else torch.tensor(i, device=device)
        logits = decode(cache, prev, position, labels)
        if guidance > 0:
            cond, uncond = logits.chunk(2)
            logits = cond + guidance * (cond - uncond)
        logits = logits / temperature
        if top_k is not None:
            kth = torch.topk(logits, top_k).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        code = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)[:, 0]
        codes[:, i] = code
        prev = torch.cat([code, code]) if guidance > 0 else code
    return codes.reshape(n, model.height, model.width)
