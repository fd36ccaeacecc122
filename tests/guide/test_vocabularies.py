"""The guide engine at real vocabularies (eval/vocabularies.py): GPT-2's BPE, ChatML on it, and a Llama-3-style
tokenizer on the cl100k ranks, with random-weight models over them.

What is checked against what: the tokenizers against GPT-2's known ids and tiktoken's own cl100k encoder; the
one score against a single-sequence recomputation from hand-written prompts; every decoder's output against the
text a scripted model (tests/scripted.py) was made to write, split characters and either end token included.
"""

from __future__ import annotations

import codecs
import itertools

import pytest
import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode

from tests.scripted import chain, response_tokens, script
from w2s.eval.vocabularies import (
    LLAMA3_PATTERN,
    LLAMA3_SPECIAL_TOKENS,
    cl100k_file,
    eos_ids,
    gpt2_config,
    random_model,
    read_ranks,
    save_model,
    shape_model,
)
from w2s.guide.commands import GuideError
from w2s.guide.config import GuideConfig
from w2s.guide.decoders import decoder_class, registered
from w2s.guide.engine import Engine
from w2s.guide.models import load_model_and_tokenizer, render_prompts
from w2s.guide.pair import GuidePair, PairScorer
from w2s.guide.run import Guide, generate
from w2s.guide.sampling import sample
from w2s.guide.stopping import StopRule
from w2s.guide.streams import SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "Say hi."
GPT2_FORMAT = "Question: {prompt}\nAnswer:"  # GPT-2 has no chat template: its pair reads a template string


def context(vocab: str, prompt: str = PROMPT) -> str:
    """The rendered prompt, written by hand (not by the tokenizer's template)."""
    if vocab == "llama3":
        return (
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
            f"{prompt.strip()}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    if vocab == "chatml":
        return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    return GPT2_FORMAT.format(prompt=prompt)


# a leading space or newline, emoji and CJK characters that byte-level BPE splits into several tokens, accents
TEXT = "Hi 😀 日本語 café! 🦙 ok"
RESPONSES = [" The movie", "\nHello", "\n\nTwo\nlines", "😀 great", "日本語のテキスト", "naïve café", "🦙🧑‍🚀!", "x"]
BYTES = {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(tokenizer, ids: list[int]) -> bytes:
    """The bytes byte-level BPE tokens stand for."""
    return b"".join(bytes(BYTES[c] for c in t) for t in tokenizer.convert_ids_to_tokens(ids))


# -- the fixtures themselves


def test_gpt2_bpe_is_gpt2s(vocabularies):
    tok = vocabularies["gpt2"]
    assert len(tok) == 50257
    assert tok("The movie was great!").input_ids == [464, 3807, 373, 1049, 0]  # GPT-2's ids, as published
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (50256, 50256, 50256)
    assert tok.convert_ids_to_tokens(50256) == "<|endoftext|>" and tok.chat_template is None
    ids = tok("😀").input_ids
    assert len(ids) == 2 and token_bytes(tok, ids) == "😀".encode()  # an emoji is two byte-level tokens
    for text in RESPONSES:
        assert tok.decode(tok(text).input_ids) == text


def test_chatml_adds_its_two_tokens_and_template(vocabularies):
    tok = vocabularies["chatml"]
    assert len(tok) == 50259 and tok("The movie was great!").input_ids == [464, 3807, 373, 1049, 0]
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [50257, 50258]
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == context("chatml")
    ids = tok(rendered, add_special_tokens=False).input_ids
    assert ids[0] == 50257 and ids.count(50257) == 2 and ids.count(50258) == 1  # whole special tokens, not text
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert eos_ids(tok) == [50258, 50256]


def test_llama3_style_tokenizer_encodes_as_tiktoken_cl100k(vocabularies):
    """The BPE built from the ranks encodes as tiktoken's own encoder of the same ranks (cl100k's pattern)."""
    import tiktoken

    tok = vocabularies["llama3"]
    reference = tiktoken.Encoding(
        "cl100k_base",
        pat_str=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        mergeable_ranks=read_ranks(cl100k_file()),
        special_tokens={},
    )
    texts = [
        *RESPONSES,
        TEXT,
        "I'm sure you'LL see 12345 or 3.14159",
        "  tabs\tand\r\n\r\nCRLF  ",
        "Привет, мир; 안녕하세요",
    ]
    for text in texts:
        assert tok(text, add_special_tokens=False).input_ids == reference.encode(text), text
    assert tok("The movie was great!").input_ids == [100256, 791, 5818, 574, 2294, 0]  # BOS first, as Llama 3
    assert LLAMA3_PATTERN  # the split transformers writes for Llama 3, checked by the encodings above


def test_llama3_style_special_tokens_template_and_end_tokens(vocabularies, vocab_models):
    tok = vocabularies["llama3"]
    assert len(tok) == 100256 + 256 and len(set(LLAMA3_SPECIAL_TOKENS)) == 256
    named = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    # Llama 3's own ids (128000, 128001, 128006, 128007, 128009) less the 27,744 BPE tokens it has beyond cl100k
    assert tok.convert_tokens_to_ids(named) == [128000 - 27744 + i for i in (0, 1, 6, 7, 9)]
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == context("llama3")
    ids = tok(rendered, add_special_tokens=False).input_ids
    specials = [i for i in ids if i >= 100256]
    assert specials == tok.convert_tokens_to_ids(named[:1] + named[2:4] + named[4:5] + named[2:4])
    assert eos_ids(tok) == tok.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    # a saved model declares both end tokens, and w2s stops at either
    model, loaded = load_model_and_tokenizer(str(vocab_models["llama3"]))
    assert model.generation_config.eos_token_id == eos_ids(tok)
    assert StopRule.for_model(model, loaded, 8).eos_ids == set(eos_ids(tok))
    assert render_prompts(loaded, [PROMPT])[1][0] == ids  # w2s renders the prompt as the template does


def test_gpt2_shapes_are_the_released_sizes(vocabularies):
    """GPT-2 small has 124,439,808 parameters (as published): embeddings 50257x768 + 1024x768, the final norm, and
    12 blocks of 7,087,872 (two norms, attention 768x2304 + 768x768, MLP 768x3072 + 3072x768, with biases)."""
    assert [(c.n_layer, c.n_embd, c.n_head, c.n_positions) for c in map(gpt2_config, ("gpt2", "gpt2-large"))] == [
        (12, 768, 12, 1024),
        (36, 1280, 20, 1024),
    ]
    block = 2 * 2 * 768 + (768 * 2304 + 2304) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768)
    assert block == 7_087_872
    sizes = [sum(p.numel() for p in shape_model("gpt2", vocabularies["gpt2"], layers=n).parameters()) for n in (1, 2)]
    assert sizes[1] - sizes[0] == block and sizes[0] + 11 * block == 124_439_808
    model = shape_model("gpt2", vocabularies["llama3"], layers=1)  # the same shape at another vocabulary
    assert model.config.vocab_size == 100512 and model.generation_config.eos_token_id == eos_ids(vocabularies["llama3"])


# -- the one score


def load_pair(vocab_models, vocab: str) -> GuidePair:
    fmt = GPT2_FORMAT if vocab == "gpt2" else "chat"
    return GuidePair.from_folders(
        str(vocab_models[f"{vocab}_tuned"]), str(vocab_models[f"{vocab}_untuned"]), prompt_format=fmt
    )


@torch.no_grad()
def brute_force(model, tok, prompt: str, response: str, finished: bool, vocab: str) -> float:
    """Independently: the hand-written prompt + response tokenised as one sequence, the response's tokens from
    their common prefix with the prompt's own, the EOS after a finished one, one plain forward, summed."""
    ctx = context(vocab, prompt)
    full = tok(ctx + response, add_special_tokens=False).input_ids
    prefix = tok(ctx, add_special_tokens=False).input_ids
    start = next((i for i, (a, b) in enumerate(zip(full, prefix, strict=False)) if a != b), min(len(full), len(prefix)))
    full += [tok.eos_token_id] if finished else []
    logp = torch.log_softmax(model(torch.tensor([full])).logits[0].double(), -1)
    return sum(logp[i - 1, full[i]].item() for i in range(start, len(full)))


def brute_ratio(pair: GuidePair, prompt: str, response: str, finished: bool, vocab: str) -> float:
    return brute_force(pair.tuned, pair.tokenizer, prompt, response, finished, vocab) - brute_force(
        pair.untuned, pair.tokenizer, prompt, response, finished, vocab
    )


@pytest.mark.parametrize("vocab", ["llama3", "chatml", "gpt2"])
def test_the_score_equals_a_single_sequence_recomputation(vocab_models, vocab):
    pair = load_pair(vocab_models, vocab)
    cases = [(r, f) for r in RESPONSES for f in (False, True)]
    got = pair.score([PROMPT] * len(cases), [r for r, _ in cases], [f for _, f in cases])
    assert got == pytest.approx([brute_ratio(pair, PROMPT, r, f, vocab) for r, f in cases], abs=1e-4)
    # incrementally, each response grown one character at a time (an emoji's tokens arrive together)
    scorer = PairScorer(pair, [PROMPT], [0] * len(RESPONSES))
    for cut in range(1, max(map(len, RESPONSES)) + 1):
        texts = [r[:cut] for r in RESPONSES]
        want = [brute_ratio(pair, PROMPT, t, False, vocab) for t in texts]
        assert scorer.update(texts, [False] * len(texts)) == pytest.approx(want, abs=1e-4), cut
    # the responses exercise split characters: some character is several tokens in this vocabulary
    tok = pair.tokenizer
    assert any(len(tok(ch, add_special_tokens=False).input_ids) > 1 for r in RESPONSES for ch in r if ord(ch) > 127)


# -- scripted models: the text a decoder must write, known by hand


@pytest.fixture(scope="module")
def scripted(vocabularies, tmp_path_factory):
    """`scripted(vocab, text, end)`: the folder of a random Llama over `vocab` made to answer PROMPT with `text`
    and then the end token `end` (or several texts, equally likely, as a list), built once per arguments."""
    built = {}
    root = tmp_path_factory.mktemp("scripted")

    def make(vocab: str, text: str | list[str] = TEXT, end: str | None = None):
        key = (vocab, str(text), end)
        if key not in built:
            tok = vocabularies[vocab]  # read and saved, never changed
            ctx = context(vocab)
            trigger = tok(ctx, add_special_tokens=False).input_ids[-1]
            end_id = tok.convert_tokens_to_ids(end) if end else tok.eos_token_id
            chains: dict = {}
            for t in [text] if isinstance(text, str) else text:
                chains |= chain(response_tokens(tok, ctx, t), trigger, end_id)
            if not isinstance(text, str):  # the branches' first tokens, equally likely after the trigger
                chains[trigger] = [response_tokens(tok, ctx, t)[0] for t in text]
            model = script(random_model(tok, hidden=64, seed=len(built)), chains)
            built[key] = save_model(model, tok, root / f"m{len(built)}")
        return str(built[key])

    return make


@pytest.fixture(scope="module")
def guide(vocab_models):
    """`guide(strong, pair=None, **keys)`: a `Guide` over the strong model folder, with the guide pair of that
    vocabulary's folders (llama3, chatml or gpt2) and any other recipe keys, loaded once per arguments; decode
    with `run(guide, decoder, prompts, **knobs)`."""
    loaded = {}

    def make(strong: str, pair: str | None = None, **keys):
        key = (strong, pair, repr(sorted(keys.items())))
        if key not in loaded:
            config = {"strong_model": strong, "max_new_tokens": 40, **keys}
            if pair:
                config |= {"tuned": str(vocab_models[f"{pair}_tuned"]), "untuned": str(vocab_models[f"{pair}_untuned"])}
                config |= {"guide_prompt_format": GPT2_FORMAT} if pair == "gpt2" else {}
            loaded[key] = Guide(GuideConfig.from_dict(config))
        return loaded[key]

    return make


def across(scripted, guide) -> Guide:
    """The scripted strong model (Llama-3-style vocabulary) with a pair and a scripted pilot on GPT-2's BPE."""
    return guide(scripted("llama3"), "chatml", pilot=scripted("chatml"))


def run(guide: Guide, decoder: str, prompts: list[str], **knobs):
    """The guide's models decoded by `decoder` with these hyper-parameters."""
    return guide.generate(prompts, decoder=decoder_class(decoder)(**knobs), progress=False)


def test_a_growing_rows_text_holds_back_a_split_character(scripted):
    """Sampled one token at a time, a row's text is the longest prefix of whole characters its tokens' bytes make
    (a UTF-8 decoder that waits for the rest of a character): never a U+FFFD for half an emoji or 語."""
    model, tok = load_model_and_tokenizer(scripted("llama3"))
    engine = Engine(model, tok, SamplingParams(1.0, 0, 1.0, 0), StopRule.for_model(model, tok, 40))
    rows = engine.start([PROMPT])
    seen = [(0, "")]
    while rows.growing():
        rows.sample(1)
        row = rows.rows[0]
        whole = codecs.getincrementaldecoder("utf-8")().decode(token_bytes(tok, row.ids), final=row.done)
        assert rows.text(row) == whole
        seen.append((len(row.ids), whole))
    assert rows.rows[0].stop.value == "eos" and seen[-1][1] == TEXT
    # some token ended inside a character (the first half of 語), and the text waited for the rest
    assert any(n > m and text == before for (m, before), (n, text) in itertools.pairwise(seen))


@pytest.mark.parametrize("guide_vocab", ["chatml", "gpt2"])
def test_cbs_across_vocabularies_writes_whole_characters(scripted, guide, vocab_models, guide_vocab):
    """The strong model on the Llama-3-style vocabulary, the pair on GPT-2's BPE: chunks of 1-3 tokens cut
    emoji and CJK characters in both vocabularies; the output is the scripted text, scored as the pair scores it."""
    want = brute_ratio(load_pair(vocab_models, guide_vocab), PROMPT, TEXT, True, guide_vocab)
    for chunk_len in (1, 2, 3):
        loaded = across(scripted, guide) if guide_vocab == "chatml" else guide(scripted("llama3"), guide_vocab)
        (out,) = run(loaded, "cbs", [PROMPT], width=2, successors=2, chunk_len=chunk_len)
        assert (out.text, out.stop) == (TEXT, "eos")
        assert out.score == pytest.approx(want, abs=1e-4)


def test_cbs_ranks_a_row_cut_inside_a_character_by_its_whole_characters(scripted, vocab_models):
    """Two branches, equally likely: 語 (two tokens in the strong vocabulary) or one word. With W=1 and L=1 the
    first chunk decides: the row holding half of 語 must compete as the empty response (score 0), not as
    U+FFFD. The word is picked so that the two readings rank the branches differently."""
    pair = load_pair(vocab_models, "chatml")
    [fffd] = pair.score([PROMPT], ["\ufffd"], [False])
    words = ["ok", "Yes", "No", "Sure", "Well", "Hello", "Maybe", "Thanks", "Right", "Good", "Fine", "Great",
             "Okay", "Indeed", "Wow", "Cool", "Hi", "Nice"]  # fmt: skip
    scores = dict(zip(words, pair.score([PROMPT] * len(words), words, [False] * len(words)), strict=True))
    between = [w for w in words if min(0.0, fffd) < scores[w] < max(0.0, fffd)]
    assert between, (fffd, scores)  # some word of these falls between for the session's guides (seeded)
    word = between[0]
    config = {"strong_model": scripted("llama3", ["語", word]), "decoder": "cbs", "width": 1, "successors": 16,
              "chunk_len": 1, "max_new_tokens": 8, "tuned": str(vocab_models["chatml_tuned"]),
              "untuned": str(vocab_models["chatml_untuned"])}  # fmt: skip
    (out,) = generate(config, [PROMPT], progress=False)
    assert out.text == ("語" if scores[word] < 0.0 else word)


def test_wsd_hands_over_across_vocabularies_inside_split_characters(scripted, guide):
    """The pilot drafts on GPT-2's BPE (😀 and 語 are 2-3 tokens), the base reads the draft in the Llama-3-style
    vocabulary and takes over at its token `window` or later (every window of a scripted base reaches the
    threshold); it continues its own script from wherever the draft was cut, so the output is the text, whole."""
    pilot = across(scripted, guide)
    for window in (1, 3, 5, 8):
        (out,) = run(pilot, "wsd", [PROMPT], window=window, threshold=0.5, check_every=2)
        assert (out.text, out.stop) == (TEXT, "eos")
        assert out.switch_at is not None and out.switch_at >= window


# -- several end tokens


@pytest.mark.parametrize("end", ["<|eot_id|>", "<|end_of_text|>"])
def test_a_row_ending_on_either_end_token_is_finished(scripted, guide, vocab_models, end):
    """<|eot_id|> (the tokenizer's EOS) and <|end_of_text|> (named by the generation config) both end a row: its
    stop is eos, no template token leaks into the text, and the guides score it finished (with their own EOS,
    here <|im_end|> of a pair on GPT-2's BPE: the text travels, not the strong model's end token)."""
    loaded = guide(scripted("llama3", TEXT, end), "chatml")
    (out,) = run(loaded, "sample", [PROMPT])
    assert (out.text, out.stop) == (TEXT, "eos")
    (out,) = run(loaded, "cbs", [PROMPT], width=2, successors=2, chunk_len=3)
    assert (out.text, out.stop) == (TEXT, "eos")
    assert out.score == pytest.approx(brute_ratio(load_pair(vocab_models, "chatml"), PROMPT, TEXT, True, "chatml"),
                                      abs=1e-4)  # fmt: skip
    # transformers' generate, the reference sampler, stops at either too
    model, tok = loaded.engine.model, loaded.engine.tokenizer
    counter = [0]
    assert sample(model, tok, [PROMPT], max_new_tokens=40, temperature=0, counter=counter) == [[TEXT]]
    assert counter[0] == len(response_tokens(tok, context("llama3"), TEXT)) + 1  # the text's tokens and the end


# -- every decoder


def test_every_decoder_writes_the_scripted_text(scripted, guide, vocab_models):
    """Each built-in decoder (and the pilot alone) over the Llama-3-style strong model: logit arithmetic with a
    pair of its vocabulary, search with a pair on GPT-2's BPE, WSD with a pilot on it; two prompts a batch."""
    cross = across(scripted, guide)
    shared = Guide.from_models(cross.engine, pairs=[load_pair(vocab_models, "llama3")], config=cross.config)
    systems = {
        "sample": (cross, {}),
        "bon": (cross, {"num_samples": 3}),
        "cbs": (cross, {"width": 2, "successors": 2, "chunk_len": 2}),
        "wsd": (cross, {"window": 2, "threshold": 0.5}),
        "eft": (shared, {"beta": 1.0}),
        "fusion": (shared, {}),
    }
    builtin = [n for n, cls in registered().items() if cls.__module__.startswith("w2s.guide.")]
    assert sorted(systems) == sorted(builtin)  # a new built-in decoder belongs in this table
    for decoder, (loaded, knobs) in systems.items():
        for out in run(loaded, decoder, [PROMPT, "Another one?"], **knobs):  # both prompts end as the script's
            assert (out.text, out.stop) == (TEXT, "eos"), decoder
            assert out.tokens["strong"] > 0
    (alone,) = run(guide(scripted("chatml")), "sample", [PROMPT])
    assert alone.text == TEXT


def test_logit_arithmetic_refuses_a_pair_of_another_vocabulary(scripted, guide):
    for decoder in ("eft", "fusion"):
        with pytest.raises(GuideError, match=r"one shared vocabulary.*decoder: cbs.*decoder: wsd"):
            run(across(scripted, guide), decoder, [PROMPT])


def test_search_over_random_bytes_scores_what_it_outputs(guide, vocab_models):
    """A random strong model over 100k tokens writes arbitrary bytes (partial characters, special tokens): the
    score of the chosen response is still the pair's score of its text, re-tokenised on GPT-2's BPE."""
    loaded = guide(str(vocab_models["llama3"]), "chatml", max_new_tokens=10, temperature=1.0, top_k=0)
    prompts = [PROMPT, "日本語で答えて 😀"]
    pair = load_pair(vocab_models, "chatml")
    for decoder, knobs in (("cbs", {"width": 2, "successors": 2, "chunk_len": 3}), ("bon", {"num_samples": 3})):
        for prompt, out in zip(prompts, run(loaded, decoder, prompts, **knobs), strict=True):
            assert out.text  # random bytes, not nothing
            want = brute_ratio(pair, prompt, out.text, out.stop == "eos", "chatml")
            assert out.score == pytest.approx(want, abs=1e-4), decoder
