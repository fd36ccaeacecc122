"""`w2s eval` of systems over real vocabularies: a Llama-3-style strong model sampled, steered by CBS with a
pair on GPT-2's BPE, and by WSD with a pilot on it; AlpacaEval files as `w2s generate` writes them, judged."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from tests.conftest import VOCAB_PROMPTS
from w2s.data.world import gold_reward
from w2s.eval.cli import main as eval_main
from w2s.guide.run import generate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_eval_over_real_vocabularies(vocab_models, vocabularies, tmp_path):
    base = {"strong_model": str(vocab_models["llama3"]), "decoder": "sample", "max_new_tokens": 8,
            "temperature": 1.0, "top_k": 0, "seed": 0}  # fmt: skip
    pair = {"tuned": str(vocab_models["chatml_tuned"]), "untuned": str(vocab_models["chatml_untuned"])}
    systems = [
        {"name": "base", "guide": base},
        {"name": "cbs", "guide": {**base, "decoder": "cbs", "width": 2, "successors": 2, "chunk_len": 3, **pair}},
        {
            "name": "wsd",
            "guide": {**base, "decoder": "wsd", "pilot": pair["tuned"], "threshold": 1e-9},
        },  # a random base: it switches
    ]
    instructions = tmp_path / "instructions.json"
    instructions.write_text(json.dumps([{"instruction": p} for p in VOCAB_PROMPTS[:3]], ensure_ascii=False))
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"instructions": str(instructions), "systems": systems, "reference": "base",
                                  "judge": "gold", "batch_size": 2, "bootstrap_samples": 50,
                                  "output_dir": str(tmp_path / "run")}))  # fmt: skip
    assert eval_main(["--config", str(config), "--quiet"]) == 0
    rows = {r["system"]: r for r in csv.DictReader((tmp_path / "run" / "leaderboard.csv").open())}
    specials = {t for tok in vocabularies.values() for t in tok.get_vocab() if t.startswith("<|") and t.endswith("|>")}
    prompts = VOCAB_PROMPTS[:3]
    for system in systems:
        outputs = json.loads((tmp_path / "run" / system["name"] / "model_outputs.json").read_text())
        texts = [o["output"] for o in outputs]
        assert [o["instruction"] for o in outputs] == prompts
        # the outputs w2s generate writes for the same recipe, with no template token in them
        assert texts == [g.text for g in generate(system["guide"], prompts, progress=False)], system["name"]
        assert not [t for t in texts if any(s in t for s in specials)]
        assert float(rows[system["name"]]["reward_mean"]) == pytest.approx(sum(gold_reward(prompts, texts)) / 3)
    assert float(rows["base"]["win_rate"]) == 50.0
    _, *records = (json.loads(line) for line in (tmp_path / "run" / "wsd" / "generations.jsonl").open())
    assert all(r["switch_at"] for r in records)  # the base took over every draft
