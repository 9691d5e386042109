"""Tiny transformers written with plain ``torch.nn``, as ONNX pruning fixtures.

Each one exercises a pattern the attention rules must get right; all are seeded and in eval mode.

| model | input | what it exercises |
|---|---|---|
| ``bert_nn`` | ``input_ids`` (N, S) int64 | token + positional embeddings (Gather on constant tables), post-LN encoder, **fused QKV** Linear split by ``chunk``, heads in Reshape/Transpose, explicit softmax(QKᵀ/√d)V, GELU MLP, pooler on the CLS token |
| ``gpt_nn`` | ``input_ids`` (N, S) int64 | pre-LN decoder, **separate Q/K/V**, ``scaled_dot_product_attention(is_causal=True)``, LM head tied to the token embedding |
| ``llama_nn`` | ``input_ids`` (N, S) int64 | decomposed **RMSNorm** (Pow/ReduceMean/Rsqrt), **grouped-query attention** (2 KV heads for 4 query heads, ``repeat_kv`` by Expand+Reshape), rotary embeddings (rotate-half), **SwiGLU** MLP (gate and up coupled) |
| ``vit_nn`` | ``input`` (N, 3, 32, 32) | patch Conv, Flatten+Transpose to tokens, a **class token** concatenated on the sequence axis, learned positions, ``nn.MultiheadAttention`` (packed in-projection), pre-LN, GELU MLP |

Build with ``python -m models.transformers_nn`` (both torch exporters, into ``models/zoo/transformers``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, SEQ = 97, 12


class _Attention(nn.Module):
    """Multi-head attention with explicit matmuls; fused QKV or separate projections."""

    def __init__(self, dim: int, heads: int, fused: bool, kv_heads: int | None = None, rope: bool = False,
                 sdpa: bool = False, causal: bool = False) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads or heads
        self.head_dim = dim // heads
        self.fused, self.rope, self.sdpa, self.causal = fused, rope, sdpa, causal
        kv_dim = self.kv_heads * self.head_dim
        if fused:
            self.qkv = nn.Linear(dim, dim + 2 * kv_dim)
        else:
            self.q = nn.Linear(dim, dim, bias=not rope)
            self.k = nn.Linear(dim, kv_dim, bias=not rope)
            self.v = nn.Linear(dim, kv_dim, bias=not rope)
        self.out = nn.Linear(dim, dim, bias=not rope)

    def _split(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        b, s, _ = t.shape
        return t.reshape(b, s, heads, self.head_dim).transpose(1, 2)

    def _rotate(self, t: torch.Tensor) -> torch.Tensor:
        s, d = t.shape[-2], self.head_dim
        inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        freqs = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        half1, half2 = t[..., : d // 2], t[..., d // 2:]
        return t * emb.cos() + torch.cat([-half2, half1], dim=-1) * emb.sin()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, dim = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split([dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = self._split(q, self.heads), self._split(k, self.kv_heads), self._split(v, self.kv_heads)
        if self.rope:
            q, k = self._rotate(q), self._rotate(k)
        if self.kv_heads != self.heads:  # repeat_kv, as in Hugging Face's LLaMA
            rep = self.heads // self.kv_heads
            k = k[:, :, None].expand(b, self.kv_heads, rep, s, self.head_dim).reshape(b, self.heads, s, self.head_dim)
            v = v[:, :, None].expand(b, self.kv_heads, rep, s, self.head_dim).reshape(b, self.heads, s, self.head_dim)
        if self.sdpa:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if self.causal:
                mask = torch.ones(s, s, dtype=torch.bool).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            ctx = scores.softmax(dim=-1) @ v
        return self.out(ctx.transpose(1, 2).reshape(b, s, dim))


class _RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight, written out as Hugging Face's LlamaRMSNorm is."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


class BertNN(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 2, ffn: int = 128, classes: int = 3) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, dim)
        self.pos = nn.Embedding(SEQ, dim)
        self.ln0 = nn.LayerNorm(dim)
        self.attn = nn.ModuleList(_Attention(dim, heads, fused=True) for _ in range(layers))
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.fc1 = nn.ModuleList(nn.Linear(dim, ffn) for _ in range(layers))
        self.fc2 = nn.ModuleList(nn.Linear(ffn, dim) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.pool = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1])
        x = self.ln0(self.tok(input_ids) + self.pos(pos))
        for attn, ln1, fc1, fc2, ln2 in zip(self.attn, self.ln1, self.fc1, self.fc2, self.ln2):
            x = ln1(x + attn(x))
            x = ln2(x + fc2(F.gelu(fc1(x))))
        return self.head(torch.tanh(self.pool(x[:, 0])))


class GPTNN(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(1, SEQ, dim) * 0.02)
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.attn = nn.ModuleList(_Attention(dim, heads, fused=False, sdpa=True, causal=True) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"),
                                               nn.Linear(4 * dim, dim)) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(input_ids) + self.pos[:, : input_ids.shape[1]]
        for ln1, attn, ln2, mlp in zip(self.ln1, self.attn, self.ln2, self.mlp):
            x = x + attn(ln1(x))
            x = x + mlp(ln2(x))
        return self.ln_f(x) @ self.tok.weight.t()  # tied LM head


class LlamaNN(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4, kv_heads: int = 2, layers: int = 2, ffn: int = 96) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, dim)
        self.norm1 = nn.ModuleList(_RMSNorm(dim) for _ in range(layers))
        self.attn = nn.ModuleList(_Attention(dim, heads, fused=False, kv_heads=kv_heads, rope=True, causal=True)
                                  for _ in range(layers))
        self.norm2 = nn.ModuleList(_RMSNorm(dim) for _ in range(layers))
        self.gate = nn.ModuleList(nn.Linear(dim, ffn, bias=False) for _ in range(layers))
        self.up = nn.ModuleList(nn.Linear(dim, ffn, bias=False) for _ in range(layers))
        self.down = nn.ModuleList(nn.Linear(ffn, dim, bias=False) for _ in range(layers))
        self.norm = _RMSNorm(dim)
        self.lm_head = nn.Linear(dim, VOCAB, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(input_ids)
        for n1, attn, n2, gate, up, down in zip(self.norm1, self.attn, self.norm2, self.gate, self.up, self.down):
            x = x + attn(n1(x))
            h = n2(x)
            x = x + down(F.silu(gate(h)) * up(h))
        return self.lm_head(self.norm(x))


class ViTNN(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4, layers: int = 2, patch: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        tokens = (32 // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                 for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for ln1, attn, ln2, mlp in zip(self.ln1, self.attn, self.ln2, self.mlp):
            h = ln1(x)
            x = x + attn(h, h, h, need_weights=False)[0]
            x = x + mlp(ln2(x))
        return self.head(self.ln(x)[:, 0])


def _randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial norm scales and biases, so pruning the hidden axis is not trivially exact."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm | _RMSNorm):
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn_like(m.bias) * 0.1)
    return model.eval()


def _seeded(seed: int, ctor: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        return _randomize_norms(ctor())

    return build


#: name -> (builder, input name, example input maker)
TRANSFORMERS: dict[str, Callable[[], nn.Module]] = {
    "bert_nn": _seeded(101, BertNN),
    "gpt_nn": _seeded(102, GPTNN),
    "llama_nn": _seeded(103, LlamaNN),
    "vit_nn": _seeded(104, ViTNN),
}
TOKEN_MODELS = ("bert_nn", "gpt_nn", "llama_nn")


def example_input(name: str, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    if name in TOKEN_MODELS:
        return torch.randint(0, VOCAB, (batch, SEQ), generator=g)
    return torch.randn(batch, 3, 32, 32, generator=g)
