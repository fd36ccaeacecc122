"""The data-set card: sources, generators, judges, what each filter removed, score and length statistics.

Written twice: `card.json` for programs (and tests that recount it) and `README.md` for people.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from w2s.data.filters import words


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values),
        "min": min(values),
        "max": max(values),
    }


def pair_statistics(pairs: list[dict]) -> dict:
    """Score, margin and length (words) statistics of preference pairs, and who wrote the chosen/rejected sides."""
    return {
        "score_chosen": _summary([p["score_chosen"] for p in pairs]),
        "score_rejected": _summary([p["score_rejected"] for p in pairs]),
        "margin": _summary([p["score_chosen"] - p["score_rejected"] for p in pairs]),
        "words_chosen": _summary([len(words(p["chosen"][-1]["content"])) for p in pairs]),
        "words_rejected": _summary([len(words(p["rejected"][-1]["content"])) for p in pairs]),
        "generator_chosen": dict(Counter(p["generator_chosen"] for p in pairs)),
        "generator_rejected": dict(Counter(p["generator_rejected"] for p in pairs)),
    }


def _table(rows: dict[str, object]) -> str:
    return "\n".join(["| | count |", "| --- | ---: |", *(f"| {k} | {v} |" for k, v in rows.items())])


def render_card(card: dict) -> str:
    """The card as a README.md (markdown with a YAML header the hub understands)."""
    r = card["recipe"]
    lines = [
        "---",
        "configs:",
        "- config_name: pairs",
        "  data_files: [{split: train, path: jsonl/pairs-train.jsonl}, {split: test, path: jsonl/pairs-test.jsonl}]",
        "- config_name: sft",
        "  data_files: [{split: train, path: jsonl/sft-train.jsonl}, {split: test, path: jsonl/sft-test.jsonl}]",
        "tags: [w2s, preference, dpo]",
        "---",
        "",
        "# Preference data set (built by `w2s data build`)",
        "",
        f"Prompts from `{r['prompt_source']}` (field `{r['prompt_field']}`), "
        f"pairing `{r['pairing']}`, seed {r['seed']}.",
        "",
        "Decontaminated against: "
        + (", ".join(f"`{d if isinstance(d, str) else d['source']}`" for d in r["decontaminate"]) or "nothing")
        + f" (word {r['decontam_ngram']}-grams); prompt duplicates removed: {r['dedup_prompts']}.",
        "",
        "## Generators",
        "",
        "| name | kind | model | samples | temperature | max new tokens | tokens written |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {g['name']} | {g['kind']} | `{g['model']}` | {g['num_samples']} | {g['temperature']} | "
            f"{g['max_new_tokens']} | {card['generator_tokens'].get(g['name'], 0)} |"
            for g in r["generators"]
        ),
        "",
        "## Judges",
        "",
        "| name | kind | model / rule | weight | agreement (both orders) |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for j in r["judges"]:
        what = {"rule": j["rule"], "implicit": f"{j['tuned']} / {j['untuned']}"}.get(j["kind"], j["model"])
        agreement = card["judges"].get(j["name"], {}).get("agreement_rate")
        lines.append(
            f"| {j['name']} | {j['kind']} | `{what}` | {j['weight']} | {'' if agreement is None else f'{agreement:.3f}'} |"
        )
    if card.get("controls"):
        lines += ["", "## Matched pairing", "", "Pairs form only among responses the control judges score alike.", ""]
        lines += ["| control | tolerance | mean chosen - rejected | without matching |", "| --- | ---: | ---: | ---: |"]
        for m in r["match"]:
            c = card["controls"][m["judge"]]
            tolerance = f"{m['tolerance']:g}" + (" (relative)" if m["relative"] else "")
            lines.append(
                f"| {m['judge']} | {tolerance} | {_number(c['mean_chosen_minus_rejected'])} | "
                f"{_number(c['unmatched_mean_chosen_minus_rejected'])} |"
            )
    lines += ["", "## What each filter removed", ""]
    for stage, rows in card["counts"].items():
        lines += [f"**{stage}**", "", _table(rows), ""]
    lines += ["## Splits", "", _table({f"{k} {s}": n for k, v in card["splits"].items() for s, n in v.items()}), ""]
    lines += ["## Statistics of the pairs", "", "| | mean | std | min | max |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, s in card["statistics"].items():
        if s and "mean" in s:
            lines.append(f"| {name} | {s['mean']:.3f} | {s['std']:.3f} | {s['min']:.3f} | {s['max']:.3f} |")
    for side in ("generator_chosen", "generator_rejected"):
        lines.append(
            f"\n{side.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in card["statistics"][side].items())
        )
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def write_card(folder: Path, card: dict, pairs: list[dict]) -> None:
    """Adds the pairs' statistics to `card` and writes `card.json` and `README.md` into `folder`."""
    card["statistics"] = pair_statistics(pairs)
    (folder / "card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    (folder / "README.md").write_text(render_card(card))
