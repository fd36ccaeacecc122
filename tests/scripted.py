"""Scripted models: random-weight Llamas rewired to write given tokens, so that a test knows by hand what a
decoder must output at a real vocabulary (every token chosen, the end token that stops it).

`script(model, chains)` makes the model predict `chains[a]` (one token, or several equally likely) whenever
its input token is `a`, with probability above 1 - 1e-6 in total, and leaves it random elsewhere. Each `a`
gets a coordinate of the residual stream of its own: its embedding writes a large value there, no layer
writes there (those rows of every attention and MLP output projection are zero), and the lm head reads only
that coordinate for the tokens `a` leads to. After the final norm the coordinate dominates the hidden state,
so the logit of `chains[a]` is about `strength * sqrt(hidden)` and every other logit is near zero.
"""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

CODE = 100.0  # the embedding's value on a token's own coordinate: it dominates the final norm


@torch.no_grad()
def script(model: LlamaForCausalLM, chains: dict[int, int | list[int]], strength: float = 5.0) -> LlamaForCausalLM:
    """Rewires `model` in place: after input token `a` it predicts `chains[a]` (a token, or tokens equally likely)."""
    hidden = model.config.hidden_size
    if len(chains) > hidden // 2:
        raise ValueError(f"{len(chains)} chained tokens need a hidden size of at least {2 * len(chains)}")
    reserved = list(range(hidden - len(chains), hidden))  # the last coordinates, one per chained input token
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    embed[:, reserved] = 0
    head[:, reserved] = 0
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[reserved] = 0
        layer.mlp.down_proj.weight[reserved] = 0
    for k, (a, targets) in zip(reserved, chains.items(), strict=True):
        embed[a, k] = CODE
        for b in [targets] if isinstance(targets, int) else targets:
            head[b, k] = strength
    return model


def chain(tokens: list[int], trigger: int, end: int) -> dict[int, int]:
    """The chains that write `tokens` after `trigger` and then `end` (the tokens must be distinct, and not `trigger`)."""
    if len(set(tokens)) != len(tokens) or trigger in tokens:
        raise ValueError(f"a script's tokens must be distinct and differ from its trigger: {tokens}, {trigger}")
    order = [trigger, *tokens]
    return {a: b for a, b in zip(order, [*tokens, end], strict=True)}


def response_tokens(tokenizer: PreTrainedTokenizerBase, context: str, text: str) -> list[int]:
    """The tokens of `text` after `context` as w2s reads a response (joint tokenisation, after the common prefix)."""
    ids = tokenizer(context + text, add_special_tokens=False).input_ids
    prefix = tokenizer(context, add_special_tokens=False).input_ids
    assert ids[: len(prefix)] == prefix, "the script's text merges into the prompt: start it otherwise"
    return ids[len(prefix) :]
