"""`w2s bench guide`: the engine against baselines, every ratio measured side by side in one run.

Fixed lengths (EOS disabled) so every method does the same work. Models are random-initialised
Llamas with the tiny world's family-A tokenizer: a strong 6 x 256 model and guides 2 x 96 (over ten
times smaller). The baseline re-implements the public weak-to-strong search approach: one prompt at
a time, both small models re-run over the whole prompt and response at every chunk.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from w2s.data.world import world_prompts
from w2s.data.world.tokenizers import world_tokenizer_path
from w2s.eval.bench_shapes import run_shapes
from w2s.guide.draft import DraftSwitch
from w2s.guide.engine import Engine
from w2s.guide.fusion import DynamicFusion, ProxyTuning
from w2s.guide.models import chat_prompt, load_model, load_tokenizer, resolve_model_path
from w2s.guide.pair import GuidePair
from w2s.guide.run import Guide
from w2s.guide.scoring import response_logprobs
from w2s.guide.search import ChunkBeamSearch, Sampling
from w2s.guide.served import ServedEngine, Server, connect, probe
from w2s.guide.state import track_states
from w2s.guide.stopping import StopRule
from w2s.guide.streams import Sampler, SamplingParams
from w2s.guide.vllm import launch

logger = logging.getLogger(__name__)


def make_model(tokenizer, layers: int, width: int, seed: int, context: int = 2048) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers, num_attention_heads=max(2, width // 64),
        intermediate_size=int(width * 8 / 3), max_position_embeddings=context, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@torch.no_grad()
def baseline_cbs(engine: Engine, pair: GuidePair, prompts: list[str], width: int, successors: int, chunk: int):
    """The public implementation's approach: one prompt at a time, full re-scoring at every chunk."""
    tok = pair.tokenizer
    for prompt in prompts:
        beams = engine.start([prompt], copies=width * successors)
        while beams.growing():
            beams.sample(chunk)
            rows = beams.rows
            texts, finished = [beams.text(r) for r in rows], [r.finished for r in rows]
            tuned = response_logprobs(pair.tuned, tok, [prompt] * len(rows), texts, finished, batch_size=len(rows))
            untuned = response_logprobs(pair.untuned, tok, [prompt] * len(rows), texts, finished, batch_size=len(rows))
            score = torch.tensor(tuned) - torch.tensor(untuned)
            top = score.topk(width).indices.tolist()
            if all(rows[i].done for i in top):
                break
            beams.select([i for i in top for _ in range(successors)])


def timed(fn, repeats: int) -> float:
    """Best of `repeats` wall times (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(lengths=(256, 1024), num_prompts: int = 8, repeats: int = 1, device: str = "cpu") -> list[tuple[str, float]]:
    """Every comparison; returns (label, ratio) rows and logs them as they come."""
    tokenizer = AutoTokenizer.from_pretrained(world_tokenizer_path("a"))
    tokenizer.model_max_length = 2048  # the benchmark models' context, not the tiny world's
    strong = make_model(tokenizer, 6, 256, seed=0).to(device)
    tuned, untuned = make_model(tokenizer, 2, 96, seed=1).to(device), make_model(tokenizer, 2, 96, seed=2).to(device)
    n_strong, n_guide = strong.num_parameters(), tuned.num_parameters()
    logger.info("strong %.2fM parameters, guides %.2fM each (%.0fx)", n_strong / 1e6, n_guide / 1e6, n_strong / n_guide)
    pair = GuidePair(tuned, untuned, tokenizer)
    prompts = world_prompts("test", num_prompts)
    rows: list[tuple[str, float]] = []

    def report(label: str, value: float, unit: str = "x"):
        rows.append((label, value))
        print(f"  {label:<64} {value:8.2f}{unit}", flush=True)

    for n in lengths:
        compare_at_length(n, strong, tokenizer, pair, prompts, repeats, device, report)

    n = lengths[0]
    stop = StopRule(eos_ids=set(), max_new_tokens=n)
    sampling = SamplingParams(1.0, 0, 1.0, seed=0)
    print(f"\nlogit arithmetic and draft-switch decoding, {n} new tokens ({device})", flush=True)
    g = Guide.from_models(Engine(strong, tokenizer, sampling, stop), pairs=[pair])
    t_eft = timed(lambda: g.decode(prompts, decoder=ProxyTuning(1.0)), repeats)
    t_fusion = timed(lambda: g.decode(prompts, decoder=DynamicFusion(2.0, 0.1)), repeats)
    report(f"dynamic logit fusion / proxy tuning, {n} tok", t_fusion / t_eft)
    report("WSD / strong model alone (tiny world, see below)", wsd_ratio(n, repeats, device))

    print("\nmemory", flush=True)
    memory_report(strong, tokenizer, pair, prompts, lengths[0], report)
    report("adapter pair / two model copies (parameter bytes)", adapter_memory_ratio(tuned))
    print("\nsampling", flush=True)
    sampling_report(report)
    return rows


def sampling_report(report, rows: int = 16, vocab: int = 151_936, repeats: int = 20) -> None:
    """One sampling step of w2s's keyed Gumbel-max sampler against `torch.multinomial` over the softmax of the
    same warped logits, at Qwen2.5's vocabulary, alternated, best of `repeats` each, on one thread (a step's
    sampling is small work: on a shared machine, more threads time the other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _sampling_report(report, rows, vocab, repeats)
    finally:
        torch.set_num_threads(threads)


def _sampling_report(report, rows: int, vocab: int, repeats: int) -> None:
    torch.manual_seed(0)
    logits = torch.randn(rows, vocab) * 3
    keys = [(i, 0, 7) for i in range(rows)]
    sides = {}
    for top_k in (0, 50):
        sampler = Sampler(SamplingParams(1.0, top_k, 1.0, seed=0))
        sides[f"w2s top_k {top_k}"] = lambda sampler=sampler: sampler(logits, keys)
        sides[f"multinomial top_k {top_k}"] = lambda sampler=sampler: torch.multinomial(sampler.warp(logits).exp(), 1)
    best = dict.fromkeys(sides, float("inf"))
    for round_ in range(repeats + 1):  # the first round warms up
        for label in sides if round_ % 2 else reversed(list(sides)):
            start = time.perf_counter()
            sides[label]()
            if round_:
                best[label] = min(best[label], time.perf_counter() - start)
    print("  ms per step: " + ", ".join(f"{label} {t * 1e3:.1f}" for label, t in best.items()))
    for top_k in (0, 50):
        report(
            f"keyed Gumbel-max / torch.multinomial, {rows} x {vocab:,}, top_k {top_k}",
            best[f"w2s top_k {top_k}"] / best[f"multinomial top_k {top_k}"],
        )


def memory_report(strong, tokenizer, pair: GuidePair, prompts: list[str], n: int, report) -> None:
    """Peak KV-cache bytes of CBS (strong + guide caches) against plain batched sampling of the same rows."""
    stop = StopRule(eos_ids=set(), max_new_tokens=n)
    with track_states() as states:  # every state the decoder creates
        engine = Engine(strong, tokenizer, SamplingParams(1.0, 0, 1.0, seed=0), stop)
        engine.start(prompts, copies=16).sample(n)
    sampling_peak = sum(s.peak_cache_bytes for s in states)
    with track_states() as states:
        engine = Engine(strong, tokenizer, SamplingParams(1.0, 0, 1.0, seed=0), stop)
        Guide.from_models(engine, pairs=[pair]).decode(prompts, decoder=ChunkBeamSearch(4, 4, 30))
    cbs_peak = sum(s.peak_cache_bytes for s in states)
    params = sum(p.numel() * p.element_size() for m in (strong, pair.tuned, pair.untuned) for p in m.parameters())
    print(
        f"  peak KV cache at {n} tokens: plain sampling {sampling_peak / 2**20:.1f} MiB, "
        f"CBS {cbs_peak / 2**20:.1f} MiB (strong + both guides); weights {params / 2**20:.1f} MiB"
    )
    report(f"CBS / plain batched sampling, peak KV-cache bytes, {n} tok", cbs_peak / sampling_peak)


def compare_at_length(n: int, strong, tokenizer, pair: GuidePair, prompts, repeats: int, device: str, report):
    """CBS against plain batched sampling and against the baseline approach, at `n` new tokens."""
    stop = StopRule(eos_ids=set(), max_new_tokens=n)

    def engine(share_prefixes: bool = True):
        return Engine(strong, tokenizer, SamplingParams(1.0, 0, 1.0, seed=0), stop, share_prefixes=share_prefixes)

    fanout = 16

    def hf_sampling():
        enc = tokenizer([encode_text(tokenizer, p) for p in prompts], return_tensors="pt", padding=True)
        enc = {k: v.repeat_interleave(fanout, 0).to(device) for k, v in enc.items()}
        strong.generate(**enc, do_sample=True, max_new_tokens=n, min_new_tokens=n, top_k=0,
                        pad_token_id=tokenizer.pad_token_id)  # fmt: skip

    def engine_sampling():
        engine().start(prompts, copies=fanout).sample(n)

    def cbs(share_prefixes: bool = True):
        Guide.from_models(engine(share_prefixes), pairs=[pair]).decode(prompts, decoder=ChunkBeamSearch(4, 4, 30))

    def baseline():
        baseline_cbs(engine(), pair, prompts, 4, 4, 30)

    print(f"\n{n} new tokens, {len(prompts)} prompts, CBS(4,4,30) = 16 rows per prompt ({device})", flush=True)
    t_hf = timed(hf_sampling, repeats)
    t_eng = timed(engine_sampling, repeats)
    t_cbs = timed(cbs, repeats)
    t_base = timed(baseline, repeats)
    t_apart = timed(lambda: cbs(share_prefixes=False), repeats)
    print(
        f"  seconds: HF sampling {t_hf:.1f}, engine sampling {t_eng:.1f}, CBS {t_cbs:.1f}, baseline {t_base:.1f}, "
        f"CBS without shared prefixes {t_apart:.1f}"
    )
    report(f"CBS / plain batched sampling (HF generate), {n} tok", t_cbs / t_hf)
    report(f"CBS / plain batched sampling (w2s engine), {n} tok", t_cbs / t_eng)
    report(f"baseline (one prompt at a time, full re-scoring) / CBS, {n} tok", t_base / t_cbs)
    report(f"baseline / plain batched sampling (HF generate), {n} tok", t_base / t_hf)
    report(f"CBS, strong model's rows apart / shared prefixes, {n} tok", t_apart / t_cbs)


def encode_text(tokenizer, prompt: str) -> str:

    return chat_prompt(tokenizer, prompt)


def wsd_ratio(n: int, repeats: int, device: str) -> float:
    """WSD with the tiny world's trained strong base and weak pilot, against the strong base alone."""

    strong, tok = load_model("tiny:strong", device=device), load_tokenizer("tiny:strong")
    pilot = (load_model("tiny:weak", device=device), load_tokenizer("tiny:weak"))
    prompts = world_prompts("test", 32)
    stop = StopRule(eos_ids=set(), max_new_tokens=n)
    sampling = SamplingParams(1.0, 0, 1.0, seed=0)

    g = Guide.from_models(Engine(strong, tok, sampling, stop), pilot=pilot)
    switches = []

    def wsd():
        out = g.decode(prompts, decoder=DraftSwitch(window=6, threshold=0.4, check_every=4))
        switches[:] = [o.switch_at for o in out]

    t_wsd = timed(wsd, repeats)
    alone = Guide.from_models(Engine(strong, tok, sampling, stop))
    t_alone = timed(lambda: alone.decode(prompts, decoder=Sampling()), repeats)
    kept = [s for s in switches if s is not None]
    print(
        f"  WSD(w=6, tau=0.4): {len(kept)}/{len(prompts)} switched, median switch at base token "
        f"{statistics.median(kept) if kept else float('nan')}"
    )
    return t_wsd / t_alone


def adapter_memory_ratio(model) -> float:
    from peft import LoraConfig, get_peft_model

    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    lora = get_peft_model(make_model_like(model), LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    pair_bytes = sum(p.numel() * p.element_size() for p in lora.parameters())
    return pair_bytes / (2 * base_bytes)


def make_model_like(model):
    return LlamaForCausalLM(model.config).eval()


def served_run(
    n: int, num_prompts: int, repeats: int, model: str, folder: str, base_url_env: str, vllm_python: str | None
) -> list[tuple[str, float]]:
    """CBS and plain sampling over a served strong model (strong_backend openai), and over the same weights in
    this process, side by side: the strong model is `folder` (the tiny world's strong base by default), served
    as `model` at the URL in `base_url_env`, or by a vLLM server this run starts from `vllm_python`."""
    with contextlib.ExitStack() as stack:
        if vllm_python:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "vllm.log"
            print(f"starting a vLLM server for {folder} (its log: {log})", flush=True)
            url = stack.enter_context(launch(Path(vllm_python), Path(resolve_model_path(folder)), model, log))
            server = probe(Server(url, model))
        else:
            server = connect(base_url_env, "W2S_STRONG_API_KEY", model)
        return _served_comparison(n, num_prompts, repeats, server, folder)


def _served_comparison(n: int, num_prompts: int, repeats: int, server, folder: str) -> list[tuple[str, float]]:
    tokenizer, strong = load_tokenizer(folder), load_model(folder)
    pair = GuidePair.from_folders("tiny:guide", "tiny:weak")  # the tiny world's DPO pair (its strong base's family)
    prompts = world_prompts("test", num_prompts)
    stop, sampling = StopRule(eos_ids=set(), max_new_tokens=n), SamplingParams(1.0, 0, 1.0, seed=0)
    engines = {
        "served": ServedEngine(server, tokenizer, sampling, stop),
        "local": Engine(strong, tokenizer, sampling, stop),
    }
    search = ChunkBeamSearch(4, 4, 5)

    def sample(side: str):
        return lambda: engines[side].start(prompts, copies=16).sample(n)

    def cbs(side: str):
        return lambda: Guide.from_models(engines[side], pairs=[pair]).decode(prompts, decoder=search)

    runs = {f"{side} {what}": fn(side) for side in engines for what, fn in (("sampling", sample), ("CBS", cbs))}
    for fn in runs.values():  # warm: the server's first requests and this process's first forwards
        fn()
    best = dict.fromkeys(runs, float("inf"))
    for round_ in range(max(2, repeats)):  # alternated: each side first in one round
        for label in runs if round_ % 2 == 0 else reversed(list(runs)):
            start = time.perf_counter()
            runs[label]()
            best[label] = min(best[label], time.perf_counter() - start)
    print(
        f"\nserved strong model ({server.base_url}, {server.model}) against the same weights in this process: "
        f"{n} new tokens, {len(prompts)} prompts, CBS(4,4,5) = 16 rows per prompt",
        flush=True,
    )
    print("  seconds: " + ", ".join(f"{label} {t:.2f}" for label, t in best.items()))
    rows = []
    for label, value in (
        (f"served CBS / served plain sampling, {n} tok", best["served CBS"] / best["served sampling"]),
        (f"local CBS / local plain sampling (w2s engine), {n} tok", best["local CBS"] / best["local sampling"]),
        (f"served plain sampling / local plain sampling, {n} tok", best["served sampling"] / best["local sampling"]),
        (f"served CBS / local CBS, {n} tok", best["served CBS"] / best["local CBS"]),
    ):
        rows.append((label, value))
        print(f"  {label:<64} {value:8.2f}x", flush=True)
    return rows


def main(args: argparse.Namespace) -> int:
    """`w2s bench guide`, its flags parsed by eval/cli.py."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.shapes:

        def report(label: str, value: float):
            print(f"  {label:<72} {value:8.2f}x", flush=True)

        run_shapes(args.shapes, args.lengths, args.prompts, args.rounds, args.profile, report)
        print("\nsampling", flush=True)
        sampling_report(report)
        return 0
    if args.strong_backend == "openai":
        served_run(
            args.lengths[0], args.prompts, args.repeats, args.strong_model, args.strong_tokenizer,
            args.strong_base_url_env, args.vllm_python,
        )  # fmt: skip
        return 0
    run(
        tuple(args.lengths), args.prompts, args.repeats, args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    )
    return 0
