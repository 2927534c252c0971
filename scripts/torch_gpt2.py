#!/usr/bin/python3
"""An independent GPT-2 in plain PyTorch: the fidelity reference for Tessera's C++ model and the
peer in the CPU training benchmark. Parameter names and layouts match the C++ ParamSpec table.

Layout rules the C++ side relies on:
  - wte is (Vp, C), Vp = V rounded up to a multiple of `pad`; rows V..Vp-1 are zero padding and
    never reach the loss, so their gradient is zero. The head is tied: logits = ln_f(x) @ wte[:V].T.
  - Every Linear stores weight as (out, in) with a bias; attn.qkv's output is [q | k | v], head h
    at columns h*HS..(h+1)*HS-1 of each third.
  - Blocks are pre-LayerNorm (eps 1e-5); GELU is the tanh approximation; attention is causal with
    scale 1/sqrt(HS), computed by explicit matmuls and a masked softmax.
Uses only torch (Debian's 1.13 at /usr/bin/python3); never imports transformers.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-5


@dataclass
class GPTConfig:
    V: int = 50257      # real vocabulary size
    pad: int = 128      # wte rows are padded up to a multiple of this
    maxT: int = 1024    # longest sequence (rows of wpe)
    L: int = 12         # transformer blocks
    NH: int = 12        # attention heads
    C: int = 768        # channels

    @property
    def Vp(self) -> int:
        return ((self.V + self.pad - 1) // self.pad) * self.pad

    @property
    def HS(self) -> int:
        return self.C // self.NH


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.C % cfg.NH == 0, f"C={cfg.C} must be a multiple of NH={cfg.NH}"
        self.NH = cfg.NH
        self.qkv = nn.Linear(cfg.C, 3 * cfg.C, bias=True)   # weight (3C, C): rows [q | k | v]
        self.proj = nn.Linear(cfg.C, cfg.C, bias=True)
        mask = torch.tril(torch.ones(cfg.maxT, cfg.maxT, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        NH, HS = self.NH, C // self.NH
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, NH, T, HS): head h owns channels h*HS..(h+1)*HS-1.
        q = q.view(B, T, NH, HS).transpose(1, 2)
        k = k.view(B, T, NH, HS).transpose(1, 2)
        v = v.view(B, T, NH, HS).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))   # (B, NH, T, T)
        att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.C, 4 * cfg.C, bias=True)
        self.proj = nn.Linear(4 * cfg.C, cfg.C, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.C, eps=LN_EPS)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.C, eps=LN_EPS)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Parameter(torch.empty(cfg.Vp, cfg.C))
        self.wpe = nn.Parameter(torch.empty(cfg.maxT, cfg.C))
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.L)])
        self.ln_f = nn.LayerNorm(cfg.C, eps=LN_EPS)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02) weights and embeddings, residual projections N(0, 0.02/sqrt(2L)),
        zero biases, LayerNorm ones/zeros, padded wte rows zero. Draws in named_params() order."""
        std = 0.02
        residual_std = std / math.sqrt(2 * self.cfg.L)
        for name, p in self.named_params().items():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                p.normal_(0.0, residual_std)
            else:
                p.normal_(0.0, std)
        self.wte[self.cfg.V:].zero_()

    def named_params(self) -> "OrderedDict[str, torch.Tensor]":
        """Parameters in the C++ ParamSpec order, by their C++ names."""
        out = OrderedDict()
        out["wte"] = self.wte
        out["wpe"] = self.wpe
        for l, blk in enumerate(self.h):
            p = f"h.{l}."
            out[p + "ln_1.weight"] = blk.ln_1.weight
            out[p + "ln_1.bias"] = blk.ln_1.bias
            out[p + "attn.qkv.weight"] = blk.attn.qkv.weight
            out[p + "attn.qkv.bias"] = blk.attn.qkv.bias
            out[p + "attn.proj.weight"] = blk.attn.proj.weight
            out[p + "attn.proj.bias"] = blk.attn.proj.bias
            out[p + "ln_2.weight"] = blk.ln_2.weight
            out[p + "ln_2.bias"] = blk.ln_2.bias
            out[p + "mlp.fc.weight"] = blk.mlp.fc.weight
            out[p + "mlp.fc.bias"] = blk.mlp.fc.bias
            out[p + "mlp.proj.weight"] = blk.mlp.proj.weight
            out[p + "mlp.proj.bias"] = blk.mlp.proj.bias
        out["ln_f.weight"] = self.ln_f.weight
        out["ln_f.bias"] = self.ln_f.bias
        return out

    def num_params(self) -> int:
        """Trainable parameter count, excluding wte's padding rows."""
        total = sum(p.numel() for p in self.parameters())
        return total - (self.cfg.Vp - self.cfg.V) * self.cfg.C

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor = None):
        """tokens, targets: (B, T) int64. Returns logits (B, T, V) and the mean cross-entropy over
        targets != -1 (None when targets is None)."""
        B, T = tokens.shape
        assert T <= self.cfg.maxT, f"T={T} exceeds maxT={self.cfg.maxT}"
        pos = torch.arange(T, device=tokens.device)
        x = self.wte[tokens] + self.wpe[pos]
        for blk in self.h:
            x = blk(x)
        x = self.ln_f(x)
        logits = x @ self.wte[: self.cfg.V].t()
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T),
                                   ignore_index=-1)
        return logits, loss


def make_adamw(model: GPT, lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
               weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (dim >= 2) only."""
    params = list(model.named_params().values())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
