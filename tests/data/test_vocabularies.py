"""`w2s data build` over models with real vocabularies (tests/conftest.py `vocab_build`): the pairs follow their
judge, the card recounts from the shards, and no special token of either tokenizer leaks into a response."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from tests.conftest import VOCAB_PROMPTS
from w2s.data.build import read_jsonl
from w2s.data.filters import words

pytestmark = pytest.mark.slow  # two generators over 50k and 100k vocabularies (tens of seconds on 2 cores)


def test_pairs_over_real_vocabularies_follow_the_judge_and_recount(vocab_build, vocabularies):
    card = json.loads((vocab_build / "card.json").read_text())
    pairs = load_from_disk(str(vocab_build / "pairs"))
    rows = [r for split in pairs for r in pairs[split]]
    for r in rows:  # chosen is the longer in words, recomputed from the text
        assert len(words(r["chosen"][0]["content"])) > len(words(r["rejected"][0]["content"]))
    generated = [row for f in sorted(vocab_build.glob("work/gen-*/*.jsonl")) for row in read_jsonl(f)]
    assert len(generated) == 2 * len(VOCAB_PROMPTS)  # each generator, every prompt
    by_prompt: dict = {}
    for row in generated:
        assert len(row["responses"]) == 2
        by_prompt.setdefault(row["prompt_id"], []).extend(row["responses"])
    ties = sum(len({len(words(r)) for r in rs if r.strip()}) < 2 for rs in by_prompt.values())
    assert card["counts"]["pairs"]["kept"] == len(rows) == len(VOCAB_PROMPTS) - ties
    specials = {t for tok in vocabularies.values() for t in tok.get_vocab() if t.startswith("<|") and t.endswith("|>")}
    assert "<|eot_id|>" in specials and "<|im_end|>" in specials
    leaked = [r for rs in by_prompt.values() for r in rs if any(s in r for s in specials)]
    assert not leaked
    sft = load_from_disk(str(vocab_build / "sft"))
    assert all(r["messages"][-1]["role"] == "assistant" for split in sft for r in sft[split])
