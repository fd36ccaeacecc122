"""log pi(y|x) is one exact quantity on every path (guide/scoring.py): the decoders' incremental scores,
full recomputation, the implicit judge and training's reward accuracy all equal an independent
single-sequence recomputation by joint tokenisation, for four kinds of tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from w2s.data.judges import make_judge
from w2s.data.recipe import JudgeConfig
from w2s.data.world import world_corpus
from w2s.guide.pair import GuidePair, PairScorer
from w2s.guide.scoring import response_logprobs
from w2s.train.evaluation import implicit_margins

SPECIALS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
# the assistant header ends in a newline, as in ChatML: where a Metaspace tokenizer and a response meet
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}\n"
    "{% else %}<|assistant|>\n{{ m['content'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CORPUS = [f"{r.prompt}\n{r.response}" for r in world_corpus("train", 300)]
PROMPTS = ["write a review of the film .", "tell me about the songs ?", "the actors"]
# with and without a leading space or newline, mid-word starts, inner newlines
RESPONSES = ["the songs were good .", " the songs were good .", "\nthe film", "songs\n\nwere fun", "o", " ."]


def byte_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return tok


def metaspace_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS))
    return tok


def unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=SPECIALS, unk_token="<pad>"))
    return tok


def wordpiece() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS))
    return tok


KINDS = {"byte_bpe": byte_bpe, "metaspace_bpe": metaspace_bpe, "unigram": unigram, "wordpiece": wordpiece}


def save_pair(tmp_path, kind: str) -> tuple[str, str]:
    """A tuned and an untuned random Llama over a freshly trained tokenizer of `kind`, saved as folders."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=KINDS[kind](), bos_token="<s>", eos_token="</s>", pad_token="<pad>", chat_template=TEMPLATE
    )
    paths = []
    for seed, name in ((1, "tuned"), (2, "untuned")):
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        )  # fmt: skip
        path = tmp_path / f"{kind}-{name}"
        LlamaForCausalLM(config).save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(str(path))
    return paths[0], paths[1]


@torch.no_grad()
def brute_force(model, tok, prompt: str, response: str, finished: bool) -> float:
    """Independently: tokenise the rendered prompt + response together, find where the response's tokens
    start (the common prefix with the prompt's own tokens), one forward of that sequence alone, sum."""
    context = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    full = tok.encode(context + response, add_special_tokens=False)
    prefix = tok.encode(context, add_special_tokens=False)
    start = next((i for i, (a, b) in enumerate(zip(full, prefix, strict=False)) if a != b), min(len(full), len(prefix)))
    full += [tok.eos_token_id] if finished else []
    logp = torch.log_softmax(model(torch.tensor([full])).logits[0].double(), -1)
    return sum(logp[i - 1, full[i]].item() for i in range(start, len(full)))


def brute_ratio(pair: GuidePair, prompt: str, response: str, finished: bool) -> float:
    tok = pair.tokenizer
    return brute_force(pair.tuned, tok, prompt, response, finished) - brute_force(
        pair.untuned, tok, prompt, response, finished
    )


@pytest.fixture(scope="module", params=list(KINDS))
def pair(request, tmp_path_factory):
    tuned, untuned = save_pair(tmp_path_factory.mktemp("scoring"), request.param)
    return GuidePair.from_folders(tuned, untuned)


def test_full_recomputation_equals_the_brute_force(pair):
    cases = [(p, r, f) for p in PROMPTS for r in RESPONSES for f in (False, True)]
    prompts, responses, finished = (list(x) for x in zip(*cases, strict=True))
    scores = pair.score(prompts, responses, finished)  # batched, padded
    assert scores == pytest.approx([brute_ratio(pair, *case) for case in cases], abs=1e-4)


def test_incremental_scores_equal_the_brute_force_at_every_chunk_boundary(pair):
    """Responses grown one character at a time: every position is a chunk boundary, so re-tokenisation
    changes the last tokens (and, where they merge, the prompt's) between updates."""
    rows = [0, 1, 2, 0]
    responses = [RESPONSES[1], RESPONSES[2], RESPONSES[3], RESPONSES[0]]
    scorer = PairScorer(pair, PROMPTS, rows)
    longest = max(map(len, responses))
    for cut in range(1, longest + 2):
        finished = [cut > longest] * len(rows)
        texts = [r[:cut] for r in responses]
        got = scorer.update(texts, finished)
        want = [brute_ratio(pair, PROMPTS[p], t, f) for p, t, f in zip(rows, texts, finished, strict=True)]
        assert got == pytest.approx(want, abs=1e-4), (cut, texts)
    scorer.select([3, 3, 1])  # beams copied and dropped, then re-scored on other texts
    texts = ["the film was", " the songs\nwere", "\nthe"]
    got = scorer.update(texts, [False] * 3)
    assert got == pytest.approx(
        [brute_ratio(pair, PROMPTS[p], t, False) for p, t in zip([0, 0, 1], texts, strict=False)], abs=1e-4
    )


def test_the_implicit_judge_and_reward_accuracy_use_the_same_score(pair):
    tuned, untuned = pair.tuned.config._name_or_path, pair.untuned.config._name_or_path
    judge = make_judge(JudgeConfig(name="implicit", kind="implicit", tuned=tuned, untuned=untuned, batch_size=4))
    prompts = [p for p in PROMPTS for _ in RESPONSES]
    responses = RESPONSES * len(PROMPTS)
    want = [
        brute_ratio(pair, p, r, True) for p, r in zip(prompts, responses, strict=True)
    ]  # a judged response is whole
    assert judge.rewards(prompts, responses) == pytest.approx(want, abs=1e-4)

    pairs = Dataset.from_dict(
        {"prompt": PROMPTS, "chosen": RESPONSES[:3], "rejected": RESPONSES[3:]}  # reward accuracy's margins
    )
    margins = implicit_margins(tuned, untuned, pairs)
    want = [
        brute_ratio(pair, p, c, True) - brute_ratio(pair, p, r, True)
        for p, c, r in zip(PROMPTS, RESPONSES[:3], RESPONSES[3:], strict=False)
    ]
    assert margins == pytest.approx(want, abs=1e-4)


def test_standalone_tokenisation_would_differ_for_metaspace(tmp_path):
    """The tests above can tell the conventions apart: a Metaspace tokenizer gives a response on its own
    other tokens than after the prompt, and the first token's log-prob then differs."""
    tuned, _ = save_pair(tmp_path, "metaspace_bpe")
    pair = GuidePair.from_folders(tuned, tuned)
    tok = pair.tokenizer
    context = tok.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}], tokenize=False, add_generation_prompt=True
    )
    joint = tok.encode(context + RESPONSES[0], add_special_tokens=False)[
        len(tok.encode(context, add_special_tokens=False)) :
    ]
    assert tok.encode(RESPONSES[0], add_special_tokens=False) != joint


def test_gpt2_scores_the_same_batched_with_padding_and_alone(tmp_path):
    """Absolute positions: left or right, padding must not shift them (position ids are passed)."""
    tok = PreTrainedTokenizerFast(tokenizer_object=byte_bpe(), bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128)).eval()
    prompts = [PROMPTS[0], PROMPTS[1] * 3, PROMPTS[2]]
    responses = [RESPONSES[0], RESPONSES[3], RESPONSES[4]]  # different lengths: padding in the batch
    batched = response_logprobs(model, tok, prompts, responses, True, batch_size=3)
    alone = [
        response_logprobs(model, tok, [p], [r], True, batch_size=1)[0] for p, r in zip(prompts, responses, strict=False)
    ]
    assert batched == pytest.approx(alone, abs=1e-4)
    assert batched == pytest.approx(
        [brute_force(model, tok, p, r, True) for p, r in zip(prompts, responses, strict=False)], abs=1e-4
    )
    # and the engine's incremental path, rows of different lengths in one left-padded cache
    pair = GuidePair(model, model, tok)
    scorer = PairScorer(pair, prompts, [0, 1, 2])
    for cut in (3, 9, 100):
        texts = [r[:cut] for r in responses]
        assert not any(math.isnan(s) for s in scorer.update(texts, [False] * 3))
        tuned = [sum(lp) for lp in scorer.sides[0].update(scorer.sides[0].tokens(texts, [False] * 3))]
        assert tuned == pytest.approx(
            [brute_force(model, tok, p, t, False) for p, t in zip(prompts, texts, strict=False)], abs=1e-4
        )
