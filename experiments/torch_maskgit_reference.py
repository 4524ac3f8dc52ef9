"""jaxbasics.prior's MaskGITPrior in eager PyTorch, and its parallel decoding loop.

The same function as :class:`jaxbasics.prior.MaskGITPrior` (a class token, then code tokens
with [MASK] = K, learned positions, the autoregressive twin's pre-norm blocks run
bidirectionally), with its weights copied from a Flax model by :func:`from_flax`.
:func:`sample` is the loop a PyTorch user would write: one Python iteration per decoding
step, each drawing every hidden code and keeping the most confident. It is the baseline of
the compiled :func:`jaxbasics.prior.sample` on a masked prior.

Only the parity test and benchmarks import this file; torch is never a dependency of
``jaxbasics``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torch_prior_reference import Block, copy_blocks

# As jaxbasics.prior.maskgit.CONFIDENCE_NOISE.
CONFIDENCE_NOISE = 4.5


class MaskGITPrior(nn.Module):
    def __init__(
        self, num_codes, height, width, num_classes=0, dim=256, depth=8, heads=8, mlp_ratio=4
    ):
        super().__init__()
        self.num_codes, self.height, self.width = num_codes, height, width
        self.num_classes = num_classes
        self.code_embed = nn.Embedding(num_codes + 1, dim)
        self.class_embed = nn.Embedding(num_classes + 1, dim)
        self.pos_embed = nn.Embedding(height * width + 1, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes)

    def logits(self, tokens, labels):
        """(B, N) long tokens (K = [MASK]), (B,) long labels -> (B, N, K) logits."""
        x = torch.cat([self.class_embed(labels)[:, None], self.code_embed(tokens)], dim=1)
        x = x + self.pos_embed(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            x = block.bidirectional(x)
        return self.head(self.ln_f(x[:, 1:]))


def from_flax(prior) -> MaskGITPrior:
    """A PyTorch copy of a Flax ``jaxbasics.prior.MaskGITPrior``, weights included."""
    sizes = ("num_codes", "height", "width", "num_classes", "dim", "depth", "heads", "mlp_ratio")
    model = MaskGITPrior(*(getattr(prior, name) for name in sizes))
    copy_blocks(model, prior, ("code_embed", "class_embed", "pos_embed"))
    return model.eval()


def hidden_after(t, steps, num):
    """Codes still hidden after step t of steps: floor(N cos(pi/2 (t+1)/T)), 0 at the end."""
    if t + 1 >= steps:
        return 0
    ratio = np.cos(np.float32(0.5 * math.pi) * np.float32((t + 1) / steps), dtype=np.float32)
    return int(np.floor(np.float32(num) * ratio))


@torch.inference_mode()
def sample(
    model,
    n,
    generator,
    *,
    labels=None,
    steps=10,
    temperature=1.0,
    top_k=None,
    guidance=0.0,
    confidence_noise=CONFIDENCE_NOISE,
):
    """(n, h, w) long codes decoded in ``steps`` parallel steps: the eager twin of
    ``jaxbasics.prior.sample`` on a masked prior (same schedule and sampling rules)."""
    num, k, device = model.height * model.width, model.num_codes, model.head.weight.device
    if labels is None:
        labels = torch.full((n,), model.num_classes, device=device)
    if guidance > 0:
        labels = torch.cat([labels, torch.full((n,), model.num_classes, device=device)])
    tokens = torch.full((n, num), k, dtype=torch.long, device=device)
    for t in range(steps):
        both = torch.cat([tokens, tokens]) if guidance > 0 else tokens
        logits = model.logits(both, labels.long())
        if guidance > 0:
            cond, uncond = logits.chunk(2)
            logits = cond + guidance * (cond - uncond)
        logits = logits / temperature
        if top_k is not None:
            kth = torch.topk(logits, top_k).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = F.softmax(logits, -1).reshape(n * num, k)
        drawn = torch.multinomial(probs, 1, generator=generator).reshape(n, num)
        hidden = tokens == k
        logp = torch.gather(F.log_softmax(logits, -1), -1, drawn[..., None])[..., 0]
        if confidence_noise > 0:
            u = torch.rand(n, num, generator=generator, device=device)
            gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
            logp = logp + confidence_noise * (1 - (t + 1) / steps) * gumbel
        confidence = torch.where(hidden, logp, torch.inf)
        keep_hidden = torch.minimum(
            torch.tensor(hidden_after(t, steps, num)), hidden.sum(dim=1) - 1
        )
        ranks = confidence.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
        stay = ranks < keep_hidden[:, None]
        tokens = torch.where(hidden & ~stay, drawn, tokens)
    return tokens.reshape(n, model.height, model.width)
