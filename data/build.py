"""The resumable, sharded runner behind `w2s data build`: prompts -> generate -> judge -> pair -> filter -> save.

Layout of `output_dir`::

    work/prompts-<key>/prompts.jsonl      the prompt set after the prompt filters (built once, atomically)
    work/gen-<name>-<key>/<shard>.jsonl    one generator's responses, one file per shard
    work/judge-<name>-<key>/<shard>.jsonl  one judge's scores, one file per shard
    pairs/  sft/                           DatasetDicts (train/test), `load_from_disk`
    jsonl/{pairs,sft}-{train,test}.jsonl   the same rows as JSONL
    README.md  card.json                   the data-set card (card.json is written last)

`work/` is `work_dir` when the recipe sets one: builds that share it (other judges, pairings or filters
over the same prompts and generators) reuse each other's generation and judge shards.

Every shard file is written to a temporary name and renamed, so a killed run
leaves only whole shards; a rerun skips them. Keys hash what a stage depends
on (prompts, the generator's settings and sampler, the contents of its local
model folders, the seed, the shard size), so editing a judge re-judges without
regenerating, and retraining a model into the same folder does not reuse its
old samples or scores. Each shard's sampling seed
derives from the recipe's seed, the generator's name and the shard's index, so
the output does not depend on where a run was interrupted or how shards were
spread over processes (`--shard i/n`, or ranks under `accelerate launch`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from tqdm.auto import tqdm

from w2s.data import filters
from w2s.data.card import write_card
from w2s.data.generators import make_generator
from w2s.data.judges import DEFAULT_PAIRWISE_TEMPLATE, agreement_rate, make_judge
from w2s.data.pairing import Candidate, make_pairs, matcher
from w2s.data.prompts import Messages, PromptError, load_prompts, prompt_text
from w2s.data.recipe import DataRecipe, RecipeError, recipe_to_dict
from w2s.guide import GuideConfig
from w2s.guide.commands import UserError
from w2s.guide.files import check_writable, model_folders, naming, remove_stale_temps, temp_dir, write_atomic
from w2s.guide.models import resolve_model_path
from w2s.guide.preflight import ModelSpec, check_guide, check_models, check_server, check_weights
from w2s.guide.shards import ShardedJob, parse_shard
from w2s.guide.streams import STREAMS

logger = logging.getLogger(__name__)

SHARD_MARKS = ".w2s-shards-done"  # <i>-of-<n>: process i of n generated and judged its shards


class IncompleteError(UserError, RuntimeError):
    """Merging before every shard was generated and judged."""


class NoPairsError(UserError, ValueError):
    """Pairing and filters left nothing (the shards stay, so a rerun with other filters only re-merges)."""


def fingerprint(obj: Any) -> str:
    """A short hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def shard_seed(seed: int, name: str, shard: int) -> int:
    """The sampling seed of one generator on one shard: independent of which process runs it, and when."""
    return int(hashlib.sha256(f"{seed}:{name}:{shard}".encode()).hexdigest()[:8], 16)


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    """Writes rows as JSONL atomically: readers see all of them or none."""
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- prompts


def _eval_sources(recipe: DataRecipe) -> list[dict]:
    out = []
    for i, item in enumerate(recipe.decontaminate):
        spec = {"source": item} if isinstance(item, str) else dict(item)
        unknown = set(spec) - {"source", "field", "split", "subset"}
        if "source" not in spec or unknown:
            raise RecipeError(f"decontaminate[{i}]: expected a source, or a mapping with source, field, split, subset")
        out.append({"field": "prompt", "split": "test", "subset": None, **spec})
    return out


def build_prompt_set(recipe: DataRecipe) -> tuple[list[dict], dict[str, int]]:
    """The prompts (`{"id", "messages"}`) left after the prompt filters, and what each filter removed."""
    prompts, empty = load_prompts(
        recipe.prompt_source,
        field=recipe.prompt_field,
        split=recipe.prompt_split,
        subset=recipe.prompt_subset,
        limit=recipe.num_prompts,
    )
    counts = {"loaded": len(prompts) + empty, "empty": empty}
    rows = [{"id": i, "messages": m} for i, m in enumerate(prompts)]

    def drop(name: str, flags: list[bool]) -> None:
        nonlocal rows
        counts[name] = sum(flags)
        rows = [r for r, f in zip(rows, flags, strict=True) if not f]

    if recipe.dedup_prompts in ("exact", "near"):
        drop("exact duplicates", filters.exact_duplicates([prompt_text(r["messages"]) for r in rows]))
    if recipe.dedup_prompts == "near":
        texts = [prompt_text(r["messages"]) for r in rows]
        drop("near duplicates", filters.near_duplicates(texts, recipe.near_dup_threshold))
    if recipe.decontaminate:
        eval_texts = []
        for spec in _eval_sources(recipe):
            eval_prompts, _ = load_prompts(
                spec["source"], field=spec["field"], split=spec["split"], subset=spec["subset"]
            )
            eval_texts += [prompt_text(m) for m in eval_prompts]
        texts = [prompt_text(r["messages"]) for r in rows]
        drop("contaminated", filters.contaminated(texts, eval_texts, recipe.decontam_ngram))
    if not rows:
        raise PromptError(f"{recipe.prompt_source}: every prompt was removed by the prompt filters ({counts})")
    counts["kept"] = len(rows)
    return rows, counts


# ---------------------------------------------------------------- the plan


@dataclass
class Plan:
    """Where each stage of a recipe keeps its shards."""

    recipe: DataRecipe
    out: Path
    prompts: list[dict]
    prompt_counts: dict[str, int]
    shards: list[list[int]]  # indices into `prompts`
    gen_dirs: dict[str, Path] = field(default_factory=dict)
    judge_dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return Path(self.recipe.work_dir) if self.recipe.work_dir else self.out / "work"

    def missing(self) -> list[Path]:
        """Shard files not written yet, over every stage."""
        dirs = [*self.gen_dirs.values(), *self.judge_dirs.values()]
        return [
            d / f"{s:05d}.jsonl" for d in dirs for s in range(len(self.shards)) if not (d / f"{s:05d}.jsonl").exists()
        ]


def plan(recipe: DataRecipe, check: Callable[[list[dict]], None] | None = None) -> Plan:
    """Loads (or builds once) the prompt set and names every stage's shard folder."""
    if not recipe.output_dir:
        raise RecipeError("output_dir is not set: give it in the recipe or as --output_dir")
    out = Path(recipe.output_dir)
    prompt_keys = (
        "prompt_source",
        "prompt_field",
        "prompt_split",
        "prompt_subset",
        "num_prompts",
        "dedup_prompts",
        "near_dup_threshold",
        "decontaminate",
        "decontam_ngram",
    )
    pkey = fingerprint({k: getattr(recipe, k) for k in prompt_keys})
    pdir = (Path(recipe.work_dir) if recipe.work_dir else out / "work") / f"prompts-{pkey}"
    if (pdir / "counts.json").exists():
        rows, counts = read_jsonl(pdir / "prompts.jsonl"), json.loads((pdir / "counts.json").read_text())
    else:
        rows, counts = build_prompt_set(recipe)
    if check is not None:
        check(rows)  # before the output folder is touched
    pdir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(pdir) + ".lock"):
        if not (pdir / "counts.json").exists():
            write_jsonl_atomic(pdir / "prompts.jsonl", rows)
            (pdir / ".counts.tmp").write_text(json.dumps(counts))
            os.replace(pdir / ".counts.tmp", pdir / "counts.json")
    rows = read_jsonl(pdir / "prompts.jsonl")
    counts = json.loads((pdir / "counts.json").read_text())
    size = recipe.shard_size
    shards = [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
    p = Plan(recipe, out, rows, counts, shards)
    gen_keys = []
    for g in recipe.generators:
        settings = {"prompts": pkey, "generator": dataclasses.asdict(g), "seed": recipe.seed, "shard_size": size}
        if g.kind == "hf":  # how the engine draws: shards of another sampler are regenerated, not reused
            settings["sampler"] = STREAMS
        if models := model_folders(settings["generator"]):  # a local model retrained since: regenerated
            settings["models"] = models
        gkey = fingerprint(settings)
        p.gen_dirs[g.name] = p.work / f"gen-{g.name}-{gkey}"
        gen_keys.append(gkey)
    for j in recipe.judges:
        settings = {k: v for k, v in dataclasses.asdict(j).items() if k != "weight"}  # weights do not change raw scores
        if j.kind == "pairwise" and not j.template:
            settings["template"] = DEFAULT_PAIRWISE_TEMPLATE  # the question asked: a new default wording re-judges
        if models := model_folders(settings):  # a local judge (reward model, pair) retrained since: re-judged
            settings["models"] = models
        p.judge_dirs[j.name] = p.work / f"judge-{j.name}-{fingerprint({'gens': gen_keys, 'judge': settings})}"
    return p


# ---------------------------------------------------------------- stages


def generate_shards(p: Plan, mine: list[int], progress: bool = True) -> dict[str, dict[str, float]]:
    """Writes every missing generation shard of `mine`; returns per generator the tokens and seconds spent."""
    spent = {}
    for g in p.recipe.generators:
        todo = [s for s in mine if not (p.gen_dirs[g.name] / f"{s:05d}.jsonl").exists()]
        if not todo:
            continue
        generator = make_generator(g)
        start = time.perf_counter()
        for s in tqdm(todo, desc=f"generating ({g.name})", disable=not progress):
            rows = [p.prompts[i] for i in p.shards[s]]
            before = generator.tokens
            responses = generator.generate([r["messages"] for r in rows], seed=shard_seed(p.recipe.seed, g.name, s))
            tokens = generator.tokens - before
            out = [{"prompt_id": r["id"], "responses": rs} for r, rs in zip(rows, responses, strict=True)]
            out[0]["shard_tokens"] = tokens
            write_jsonl_atomic(p.gen_dirs[g.name] / f"{s:05d}.jsonl", out)
        spent[g.name] = {"tokens": generator.tokens, "seconds": time.perf_counter() - start}
        del generator
    return spent


def shard_candidates(p: Plan, s: int) -> tuple[list[Messages], list[list[str]], list[list[str]]]:
    """A shard's prompts, their responses over every generator (in recipe order) and who wrote each."""
    per_gen = {g.name: read_jsonl(p.gen_dirs[g.name] / f"{s:05d}.jsonl") for g in p.recipe.generators}
    prompts, responses, authors = [], [], []
    for k, i in enumerate(p.shards[s]):
        prompts.append(p.prompts[i]["messages"])
        responses.append([r for g in per_gen.values() for r in g[k]["responses"]])
        authors.append([name for name, g in per_gen.items() for _ in g[k]["responses"]])
    return prompts, responses, authors


def judge_shards(p: Plan, mine: list[int], progress: bool = True) -> None:
    """Writes every missing judgement shard of `mine` (its generation shards must exist)."""
    for j in p.recipe.judges:
        todo = [s for s in mine if not (p.judge_dirs[j.name] / f"{s:05d}.jsonl").exists()]
        if not todo:
            continue
        judge = make_judge(j)
        for s in tqdm(todo, desc=f"judging ({j.name})", disable=not progress):
            prompts, responses, _ = shard_candidates(p, s)
            scores, extras = judge.score(prompts, responses)
            ids = [p.prompts[i]["id"] for i in p.shards[s]]
            rows = [{"prompt_id": i, "scores": sc, **ex} for i, sc, ex in zip(ids, scores, extras, strict=True)]
            write_jsonl_atomic(p.judge_dirs[j.name] / f"{s:05d}.jsonl", rows)
        del judge


# ---------------------------------------------------------------- merge


def _ensemble(p: Plan, raw: dict[str, list[list[list[float]]]]) -> list[list[list[float]]]:
    """Per shard, prompt and response: the one judge's raw score, or the weighted mean of z-scored judges (the
    control judges of matched pairing left out)."""
    controls = {m.judge for m in p.recipe.match}
    judges = [j for j in p.recipe.judges if j.name not in controls]
    if len(judges) == 1:
        return raw[judges[0].name]
    norm = {}
    for j in judges:
        flat = [x for shard in raw[j.name] for prompt in shard for x in prompt]
        mean, std = statistics.fmean(flat), (statistics.pstdev(flat) or 1.0)
        norm[j.name] = (mean, std)
    total = sum(j.weight for j in judges)
    return [
        [
            [
                sum(j.weight * (raw[j.name][s][k][r] - norm[j.name][0]) / norm[j.name][1] for j in judges) / total
                for r in range(len(raw[judges[0].name][s][k]))
            ]
            for k in range(len(raw[judges[0].name][s]))
        ]
        for s in range(len(p.shards))
    ]


def _split_of(seed: int, prompt_id: int, test_fraction: float) -> str:
    return "test" if random.Random(f"split:{seed}:{prompt_id}").random() < test_fraction else "train"


def merge(p: Plan) -> Path:
    """Pairs, filters and saves the whole data set with its card, now (`w2s data merge`); every shard must be
    complete. Under the build's merge lock: one merge at a time."""
    with ShardedJob(p.out / SHARD_MARKS).finish(force=True):
        return _merge(p)


def _merge(p: Plan) -> Path:
    missing = p.missing()
    if missing:
        raise IncompleteError(
            f"{len(missing)} shard file(s) are not written yet (e.g. {missing[0]}): run `w2s data build` "
            "for every shard before merging"
        )
    r = p.recipe
    judged = {
        j.name: [read_jsonl(p.judge_dirs[j.name] / f"{s:05d}.jsonl") for s in range(len(p.shards))] for j in r.judges
    }
    raw = {name: [[row["scores"] for row in shard] for shard in shards] for name, shards in judged.items()}
    extras = {name: [row for shard in shards for row in shard] for name, shards in judged.items()}
    combined = _ensemble(p, raw)
    counts = {"prompts": dict(p.prompt_counts), "responses": {}, "pairs": {}}
    n_responses = n_empty = n_degenerate = n_unpaired = n_paired_before = n_margin = n_length = 0
    matched = matcher(r.match)
    unmatched_prompts = unmatched_pairs = 0  # what matching removed: prompts left without a pair, pairs
    unmatched_gaps: dict[str, list[float]] = {m.judge: [] for m in r.match}  # controls' chosen - rejected, unmatched
    pair_rows, sft_rows = [], []
    gen_tokens = {g.name: 0 for g in r.generators}
    for s in range(len(p.shards)):
        prompts, responses, authors = shard_candidates(p, s)
        for g in r.generators:
            gen_tokens[g.name] += read_jsonl(p.gen_dirs[g.name] / f"{s:05d}.jsonl")[0].get("shard_tokens", 0)
        for k, i in enumerate(p.shards[s]):
            prompt_id = p.prompts[i]["id"]
            candidates = []
            for n, (resp, author) in enumerate(zip(responses[k], authors[k], strict=True)):
                n_responses += 1
                if not filters.words(resp):
                    n_empty += 1
                    continue
                if filters.degenerate(resp, r.max_repeat_fraction):
                    n_degenerate += 1
                    continue
                scores = {j.name: raw[j.name][s][k][n] for j in r.judges}
                candidates.append(Candidate(resp, author, combined[s][k][n], scores))
            split = _split_of(r.seed, prompt_id, r.test_fraction)
            if candidates:
                best = max(candidates, key=lambda c: c.score)
                sft_rows.append(
                    (
                        split,
                        {
                            "messages": [*prompts[k], {"role": "assistant", "content": best.response}],
                            "score": best.score,
                            "generator": best.generator,
                            "prompt_id": prompt_id,
                        },
                    )
                )
            pairs = make_pairs(candidates, r.pairing, random.Random(f"pair:{r.seed}:{prompt_id}"), matched)
            if matched is not None:  # the same pairing without the controls, for the card
                free = make_pairs(candidates, r.pairing, random.Random(f"pair:{r.seed}:{prompt_id}"))
                unmatched_prompts += bool(free) and not pairs
                unmatched_pairs += len(free) - len(pairs)
                for m in r.match:
                    unmatched_gaps[m.judge] += [a.scores[m.judge] - b.scores[m.judge] for a, b in free]
            n_unpaired += not pairs
            n_paired_before += len(pairs)
            for chosen, rejected in pairs:
                if chosen.score - rejected.score <= r.min_margin and r.min_margin > 0:
                    n_margin += 1
                    continue
                ratio = filters.length_ratio(chosen.response, rejected.response)
                if not r.min_length_ratio <= ratio <= r.max_length_ratio:
                    n_length += 1
                    continue
                pair_rows.append(
                    (
                        split,
                        {
                            "prompt": prompts[k],
                            "chosen": [{"role": "assistant", "content": chosen.response}],
                            "rejected": [{"role": "assistant", "content": rejected.response}],
                            "score_chosen": chosen.score,
                            "score_rejected": rejected.score,
                            "generator_chosen": chosen.generator,
                            "generator_rejected": rejected.generator,
                            "judge_scores_chosen": chosen.scores,
                            "judge_scores_rejected": rejected.scores,
                            "prompt_id": prompt_id,
                        },
                    )
                )
    kept_responses = n_responses - n_empty - n_degenerate
    counts["responses"] = {
        "generated": n_responses,
        "empty": n_empty,
        "degenerate": n_degenerate,
        "kept": kept_responses,
    }
    matching = {  # what the controls removed (matched pairing only)
        "prompts without a pair alike on the controls": unmatched_prompts,
        "pairs the controls removed": unmatched_pairs,
    }
    counts["pairs"] = {
        "prompts without a pair (ties or < 2 responses)": n_unpaired - unmatched_prompts,
        **(matching if matched is not None else {}),
        "paired": n_paired_before,
        "margin": n_margin,
        "length ratio": n_length,
        "kept": len(pair_rows),
    }
    if not pair_rows:
        raise NoPairsError(f"{p.out}: no pair survived pairing and filters ({counts}); see the recipe's filters")
    judge_info = {j.name: {"agreement_rate": agreement_rate(extras[j.name])} for j in r.judges if j.kind == "pairwise"}
    card = {
        "recipe": recipe_to_dict(r),
        "counts": counts,
        "splits": {},
        "generator_tokens": gen_tokens,
        "judges": judge_info,
    }
    if matched is not None:  # each control's mean chosen - rejected: in the kept pairs (near 0), and unmatched
        card["controls"] = {
            m.judge: {
                "mean_chosen_minus_rejected": _mean(
                    [
                        row["judge_scores_chosen"][m.judge] - row["judge_scores_rejected"][m.judge]
                        for _, row in pair_rows
                    ]
                ),
                "unmatched_mean_chosen_minus_rejected": _mean(unmatched_gaps[m.judge]),
            }
            for m in r.match
        }
    _save(p.out, pair_rows, sft_rows, card, r.jsonl)
    return p.out


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _save(out: Path, pair_rows: list, sft_rows: list, card: dict, jsonl: bool) -> None:
    from datasets import Dataset, DatasetDict

    tmp = temp_dir(out / "merge")
    try:
        for name, rows in (("pairs", pair_rows), ("sft", sft_rows)):
            data = Dataset.from_list([row for _, row in rows])
            splits = DatasetDict(
                {
                    split: data.select([i for i, (sp, _) in enumerate(rows) if sp == split])
                    for split in ("train", "test")
                }
            )
            # an empty split needs one (empty) shard, or load_from_disk cannot read it back
            splits.save_to_disk(str(tmp / name), num_shards={k: 1 for k, d in splits.items() if len(d) == 0})
            card["splits"][name] = {split: len(d) for split, d in splits.items()}
            if jsonl:
                for split, d in splits.items():
                    (tmp / "jsonl").mkdir(exist_ok=True)
                    path = tmp / "jsonl" / f"{name}-{split}.jsonl"
                    with naming(path), path.open("w") as f:
                        for row in d:
                            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        write_card(tmp, card, [row for _, row in pair_rows])
        for name in ("pairs", "sft", "jsonl", "README.md", "card.json"):  # card.json last: it marks a finished build
            if not (tmp / name).exists():
                continue
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the runner


def build(recipe: DataRecipe, *, shard: str | None = None, do_merge: bool = True, progress: bool = True) -> Path | None:
    """Runs (or resumes) this process's shards of every stage, then merges once every shard exists."""
    threads = torch.get_num_threads()
    if recipe.num_threads:
        torch.set_num_threads(recipe.num_threads)
    try:
        return _build(recipe, shard, do_merge, progress)
    finally:
        torch.set_num_threads(threads)


def check_recipe_models(recipe: DataRecipe, rows: list[dict]) -> None:
    """Before any generation: every generator's and judge's model (weights, code, prompt format) and every
    prompt within each generator's context (guide/preflight.py)."""
    messages = [r["messages"] for r in rows]
    for i, g in enumerate(recipe.generators):
        where = f"generators[{i}] ({g.name})"
        if g.kind == "hf":
            spec = ModelSpec(g.model, where, g.prompt_format, f"{where}.prompt_format")
            check_models([spec], messages, trust_remote_code=g.trust_remote_code)
        elif g.kind == "openai":
            check_server(
                g.model, g.tokenizer or g.model, messages, base_url_env=g.base_url_env, api_key_env=g.api_key_env,
                prompt_format=g.prompt_format, format_key=f"{where}.prompt_format", what=f"{where}'s tokenizer",
                trust_remote_code=g.trust_remote_code,
            )  # fmt: skip
        else:
            config = GuideConfig.from_dict(dict(g.guide), source=f"{where}: guide")
            check_guide(config, [m[-1]["content"] for m in messages])
    for i, j in enumerate(recipe.judges):
        where = f"judges[{i}] ({j.name})"
        models = (
            [j.model]
            if j.kind in ("reward_model", "pairwise")
            else [j.tuned, j.untuned]
            if j.kind == "implicit"
            else []
        )
        specs = [ModelSpec(m, where, j.prompt_format, f"{where}.prompt_format") for m in models]
        if j.kind == "implicit":  # it reads the prompt itself: each must fit
            check_models(specs, messages, trust_remote_code=j.trust_remote_code)
        elif j.kind == "pairwise":
            check_models(specs, [], trust_remote_code=j.trust_remote_code)  # a long question is cut and counted
        elif j.kind == "reward_model":
            for spec in specs:
                check_weights(resolve_model_path(spec.name), where)


def _build(recipe: DataRecipe, shard: str | None, do_merge: bool, progress: bool) -> Path | None:
    i, n = parse_shard(shard)
    if recipe.output_dir:
        check_writable(recipe.output_dir)
        remove_stale_temps(recipe.output_dir)  # what a killed run was writing
    p = plan(recipe, check=lambda rows: check_recipe_models(recipe, rows))
    job = ShardedJob(p.out / SHARD_MARKS, (i, n))
    job.begin()
    mine = job.items(len(p.shards))
    logger.info(
        "%d prompts in %d shards; this process (%d/%d) takes %d", len(p.prompts), len(p.shards), i, n, len(mine)
    )
    generate_shards(p, mine, progress)
    judge_shards(p, mine, progress)
    with job.finish() as last:  # the last process to finish merges (with --no-merge, `w2s data merge` does)
        if last and do_merge:
            return _merge(p)
        if not last:
            logger.info(
                "%d shard file(s) of other processes are missing: the last process to finish merges (or run "
                "`w2s data merge` once they finish)",
                len(p.missing()),
            )
        return None
