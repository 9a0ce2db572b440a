"""A tiny causal transformer (GPT) built as a flat sequence of layers (pipeline-splittable)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import LOSSES, MODELS
from ..utils.checks import check_positive_int


class GPTEmbedding(nn.Module):
    """Token plus learned position embeddings: ids ``(B, T)`` -> ``(B, T, n_embd)``."""

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, dropout: float = 0.0):
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f'sequence length {t} exceeds block_size {self.block_size}; '
                             f'feed shorter sequences or build TinyGPT with a larger block_size')
        pos = torch.arange(t, device=idx.device)
        return self.drop(self.tok(idx) + self.pos(pos))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention on torch's fused ``scaled_dot_product_attention``.

    Written out rather than using ``nn.MultiheadAttention`` because that one needs the mask
    passed in (a Sequential child gets one input) and has no public ``reset_parameters``,
    which the pipeline's meta-device materialization relies on.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f'n_embd={n_embd} must be divisible by n_head={n_head}')
        self.n_head = n_head
        self.dropout = dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class GPTBlock(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


@MODELS.register_module()
class TinyGPT(nn.Sequential):
    """``GPTEmbedding -> GPTBlock x n_layer -> LayerNorm -> Linear head``; ids -> logits ``(B, T, vocab)``.

    Every child is one pipeline-splittable layer. Parameters use the default initialization
    of torch's layers so that layer-by-layer (meta-device) building matches whole-model building.
    """

    def __init__(self, vocab_size: int, block_size: int = 64, n_layer: int = 2, n_head: int = 4,
                 n_embd: int = 64, dropout: float = 0.0):
        for name, value in (('vocab_size', vocab_size), ('block_size', block_size), ('n_layer', n_layer),
                            ('n_head', n_head), ('n_embd', n_embd)):
            check_positive_int(f'TinyGPT {name}', value)
        super().__init__(GPTEmbedding(vocab_size, block_size, n_embd, dropout),
                         *[GPTBlock(n_embd, n_head, dropout) for _ in range(n_layer)],
                         nn.LayerNorm(n_embd), nn.Linear(n_embd, vocab_size))
        self.vocab_size = vocab_size
        self.block_size = block_size


@LOSSES.register_module()
class SequenceCrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy over every position: logits ``(B, T, V)`` and targets ``(B, T)`` are flattened.

    ``nn.CrossEntropyLoss`` wants classes in dim 1; language models put them last.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(input.reshape(-1, input.shape[-1]), target.reshape(-1))
