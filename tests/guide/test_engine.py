"""The engine's KV state against full forwards, past the points where its cache buffers grow."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from w2s.guide.kv import SPARE, GrowingLayer, copy_plan
from w2s.guide.sampling import count_new_tokens
from w2s.guide.state import LMState

VOCAB = 64


def llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64, max_position_embeddings=1024,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def gpt2():
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=1024, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("shared", [True, False], ids=["shared-prefixes", "rows-apart"])
@pytest.mark.parametrize("make", [llama, gpt2], ids=["llama", "gpt2"])
def test_state_logits_equal_a_full_forward_across_buffer_growth(make, shared):
    """Uneven blocks, beam copies, dropped rows, roll-backs into a shared prefix; every row's next-token
    logits and log-probs must equal one forward over that row's tokens alone."""
    model = make()
    g = torch.Generator().manual_seed(1)

    def tokens(n):
        return torch.randint(1, VOCAB, (n,), generator=g).tolist()

    state = LMState(model, 3, shared=shared)
    assert state.shared == shared
    state.append([tokens(5), tokens(17), tokens(1)])
    for step in range(30):  # buffers re-allocated several times
        blocks = [tokens(int(n)) for n in torch.randint(0, 30, (state.rows,), generator=g)]
        lps = state.append(blocks, logprobs=True)
        for row, (block, lp) in enumerate(zip(blocks, lps, strict=True)):
            if block:  # each new token's log-prob given everything before it
                ids = torch.tensor([state.ids[row]])
                full = torch.log_softmax(model(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
                assert torch.allclose(torch.tensor(lp), full[-len(block) :], atol=1e-4), f"step {step}, row {row}"
        if step == 3:
            state.select([0, 0, 2, 1])  # a beam copy; rows re-ordered
        if step == 6:
            state.rollback(1, 7)
            state.append([[], tokens(2), [], []])
        if step == 8:
            state.select([1, 0, 3, 2])  # two swaps: cycles copied through the spare row
        if step == 9:
            state.select([3, 1, 0])  # a row dropped
        if step == 12:
            state.select([2, 2, 0, 2])  # beam copies again: groups of groups
        if step == 14:  # one copy rolls back past where it was copied; its siblings keep those tokens
            state.rollback(1, 60)
            state.append([[], tokens(1), [], []])
        if step == 16:
            state.select([3, 0, 1])  # a reorder and a drop keep the groups
    assert max(len(ids) for ids in state.ids) > 300  # past several re-allocations
    for row in range(state.rows):
        full = model(torch.tensor([state.ids[row]])).logits[0, -1]
        assert torch.allclose(state.last_logits[row], full, atol=1e-4), f"row {row}"
    layers = [layer for layer in state.cache.layers if isinstance(layer, GrowingLayer)]
    assert layers, "full-attention layers use growing buffers"
    assert all((layer.prefix_len > 100) == shared for layer in layers)
    assert all(layer.key_buffer.shape[-2] >= layer.filled for layer in layers)
    assert state.cache_bytes() >= sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in layers)


def test_copy_plan_reorders_rows_in_place_like_a_gather():
    """Permutations (cycles), beam copies and dropped rows, applied in place with one spare row."""
    g = torch.Generator().manual_seed(0)
    cases = [[1, 0], [2, 0, 1], [0, 0, 0, 0], [3, 3, 1, 1], [1, 2, 3, 0, 5, 4]]
    for _ in range(200):
        rows = int(torch.randint(1, 9, (1,), generator=g))
        new = int(torch.randint(1, rows + 1, (1,), generator=g))
        cases.append(torch.randint(0, rows, (new,), generator=g).tolist())
        cases.append(torch.randperm(rows, generator=g).tolist())
    for index in cases:
        rows = max(max(index) + 1, len(index))
        buffer, spare = [f"row{i}" for i in range(rows)], None
        for destination, source in copy_plan(index):
            if destination == SPARE:
                spare = buffer[source]
            else:
                buffer[destination] = spare if source == SPARE else buffer[source]
        assert buffer[: len(index)] == [f"row{j}" for j in index], index
    assert copy_plan([0, 1, 2]) == []  # rows that keep their place cost nothing


def test_new_tokens_count_up_to_and_including_the_first_eos():
    eos, pad = 1, 2
    new = torch.tensor([[5, pad, 7, eos, pad, pad], [eos, pad, pad, pad, pad, pad], [5, 6, 7, 8, 9, 9]])
    assert count_new_tokens(new, eos) == 4 + 1 + 6  # a pad token sampled before EOS was written
    assert count_new_tokens(new, None) == 18
