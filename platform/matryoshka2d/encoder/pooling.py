"""Pooling a layer's token states into one vector, as sentence-transformers' ``Pooling`` does, and the prompts put
before each input by role."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

ROLE_PROMPTS = {"query": ("query",), "document": ("document", "passage", "corpus")}  # ST's encode_query/_document


@dataclass(frozen=True)
class Prompts:
    """sentence-transformers' prompts: a text put before each input, by role (``query``, ``document``) or by default,
    as ``encode_query`` / ``encode_document`` / ``encode`` choose them."""

    named: dict[str, str] = field(default_factory=dict)
    default: str | None = None  # default_prompt_name

    def text(self, role: str | None = None) -> str:
        name = next((n for n in ROLE_PROMPTS.get(role or "", ()) if n in self.named), self.default)
        return self.named.get(name, "") if name else ""


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str, prompt_length: int = 0) -> torch.Tensor:
    """``hidden`` [B, T, H] -> [B, H] as sentence-transformers' ``Pooling`` does it (left or right padding alike).

    ``prompt_length`` > 0 (``include_prompt: false``): the prompt's tokens, after any left padding, are not pooled.
    """
    original = mask
    if prompt_length:
        pads = mask.to(torch.int32).argmax(dim=1)  # left padding before each text (0 when padded right)
        positions = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
        mask = mask.masked_fill(positions < (pads + prompt_length).unsqueeze(1), 0)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":  # the first pooled token
        return hidden[torch.arange(hidden.size(0)), mask.to(torch.int32).argmax(dim=1)]
    if mode == "lasttoken":  # the last pooled token
        found, back = mask.flip(1).max(1)
        last = hidden.size(1) - 1 - torch.where(found == 0, hidden.size(1) - 1, back)
        return (hidden * m)[torch.arange(hidden.size(0)), last]
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
    if mode == "weightedmean":  # weights 1, 2, ... from the first real token
        weights = torch.arange(1, hidden.size(1) + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
        weights = m * (weights - original.to(torch.int32).argmax(dim=1).view(-1, 1, 1))
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    count = mask.to(hidden.dtype).sum(1, keepdim=True).clamp(min=1e-9)
    # mean as a batched matmul: no [B, T, H] temporary per layer
    total = torch.bmm(mask.to(hidden.dtype).unsqueeze(1), hidden).squeeze(1)
    return total / (count.sqrt() if mode == "mean_sqrt_len_tokens" else count)
