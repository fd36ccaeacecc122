"""`w2s demo`: the main job on the tiny world; `w2s eval`: compare systems on an instruction set; `w2s bench`.

The parsers live here and import nothing heavy; the work loads when a command runs (guide/commands.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from w2s.eval.config import EvalConfigError, add_flags, load_config
from w2s.guide.commands import ArgumentParser, command, lazy
from w2s.guide.config import GuideConfig
from w2s.guide.files import read_recipe

evaluate = lazy("w2s.eval.run:evaluate")
parse_shard = lazy("w2s.guide.shards:parse_shard")
alignment_tax = lazy("w2s.eval.alignment_tax:alignment_tax")
run_demo = lazy("w2s.eval.demo:main")
bench_guide = lazy("w2s.eval.bench_guide:main")
bench_data = lazy("w2s.eval.bench_data:main")
bench_eval = lazy("w2s.eval.bench_scale:main")
bench_serve = lazy("w2s.eval.bench_serve:main")
run_server = lazy("w2s.guide.serve:serve")
SHAPE_NAMES = ("paper-sentiment", "llama-100k")  # eval/bench_shapes.py SHAPES (named here without torch)

DEMO_DESCRIPTION = (
    "The main job on the tiny world: data (judged three ways) -> DPO of a guide and two experts -> WSD's "
    "calibration -> CBS distilled into the strong base -> evaluation of 15 systems and the seed papers' findings, "
    "each stage a real w2s command; a rerun reuses finished stages of the same world (eval/demo.py)."
)
BENCH_USAGE = """usage: w2s bench {guide,data,eval,serve} [options]

  guide   the decoding engine against baselines, side by side (w2s bench guide --help)
  data    the data builder's generation stage against a plain generate loop (w2s bench data --help)
  eval    w2s eval over several processes against one (w2s bench eval --help)
  serve   w2s serve under concurrent clients against offline w2s generate (w2s bench serve --help)"""


@command("w2s demo")
def demo(argv: list[str]) -> int:
    """`w2s demo`: the main job on the tiny world (eval/demo.py)."""
    parser = ArgumentParser(prog="w2s demo", description=DEMO_DESCRIPTION)
    parser.add_argument("--run_dir", help="where the stages write (default runs/demo, or runs/demo-world<N>)")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (the end-to-end test's)")
    parser.add_argument("--fresh", action="store_true", help="forget finished stages and run everything again")
    parser.add_argument("--world", type=int, help="the world seed (default $W2S_WORLD_SEED, else 0)")
    parser.add_argument("--worlds", type=int, nargs="+", metavar="N",
                        help="run the demo on each of these worlds, then summarise across them (e.g. 0 1 2)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="every library message on the console too")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 unless every finding holds (default: exit 0 once every stage ran; the findings "
                        "that do not reproduce are printed as NO)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.worlds and (args.run_dir or args.world is not None):
        parser.error("--worlds picks each world's run folder: drop --run_dir and --world")
    if args.world is not None and args.world < 0:
        parser.error("--world must be >= 0")
    return run_demo(args)


@command("w2s eval")
def main(argv: list[str]) -> int:
    """`w2s eval --config recipes/<family>/eval.yaml [--<key> value ...]`: generate, judge, report."""
    parser = ArgumentParser(
        prog="w2s eval",
        description="Compare systems (each a guide recipe) on an instruction set: generate their outputs "
        "(resumable), judge them against a reference (cached), write AlpacaEval-format outputs, a leaderboard "
        "and plots. Flags override the recipe's keys. Under `accelerate launch` (or with --shard i/n) each "
        "process takes every n-th instruction; the last to finish writes what one process writes.",
        epilog="Two processes: accelerate launch --multi_gpu --num_processes 2 -m w2s.cli eval --config ...",
    )
    parser.add_argument("--config", help="eval recipe YAML, e.g. recipes/tiny/eval.yaml")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--shard",
        help="i/n: generate and judge instructions i, i+n, ... of every system; the last shard to finish writes "
        "the results (default: the rank under accelerate launch, else all)",
    )
    add_flags(parser)
    args = vars(parser.parse_args(argv))
    path, quiet, shard = args.pop("config"), args.pop("quiet"), args.pop("shard")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = load_config(path, {k: v for k, v in args.items() if v is not None})
    shard = parse_shard(shard)
    result = evaluate(config, progress=not quiet, shard=shard)  # a user's mistake: one line, exit 2
    if not result.complete:
        gen = sum(v["generated"] for v in result.generation.values())
        print(
            f"shard {shard[0]}/{shard[1]}: {gen} outputs generated, {result.judging['judged']} judged; the last "
            f"shard to finish writes the results to {config.output_dir} (or rerun `w2s eval` without --shard)"
        )
        return 0
    if config.lm_eval_tasks:
        alignment_tax(config)
    print((Path(config.output_dir) / "leaderboard.md").read_text())
    gen = ", ".join(f"{k}: {v['generated']} generated, {v['reused']} reused" for k, v in result.generation.items())
    print(f"generation: {gen}")
    print(
        f"judging ({result.judging['judge']}): {result.judging['judged']} judged, {result.judging['cached']} from cache"
    )
    print("wrote: " + ", ".join(result.files))
    return 0


def served_systems(path: str, overrides: list[str], only: str | None = None) -> dict[str, GuideConfig]:
    """The systems `w2s serve` serves from a recipe: a guide recipe is one (named by its `generator`, else its
    decoder), an eval recipe each of its guide systems (`only`: a comma-separated few); `--key value` overrides
    apply to every system's guide recipe."""
    if "systems" not in read_recipe(path):
        if only:
            raise EvalConfigError(f"--systems picks systems of an eval recipe; {path} is a guide recipe")
        config = GuideConfig.from_yaml(path, overrides)
        return {config.generator or config.decoder: config}
    eval_config = load_config(path)
    systems = {s.name: s for s in eval_config.system_list()}
    names = [n.strip() for n in only.split(",")] if only else [n for n, s in systems.items() if s.guide is not None]
    unknown = [n for n in names if n not in systems]
    if unknown:
        raise EvalConfigError(f"--systems: {unknown[0]!r} is not a system of {path} (it has: {', '.join(systems)})")
    out = {}
    for name in names:
        if systems[name].guide is None:
            raise EvalConfigError(f"system {name!r} of {path} is an endpoint, not a guide recipe: nothing to serve")
        out[name] = GuideConfig.with_flags(
            dict(systems[name].guide), overrides, source=f"{path}: system {name!r}: guide"
        )
    return out


@command("w2s serve")
def serve(argv: list[str]) -> int:
    """`w2s serve --config <guide or eval recipe>`: its systems behind an OpenAI-compatible API (guide/serve.py)."""
    parser = ArgumentParser(
        prog="w2s serve",
        description="Serve a guided system behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions, "
        "/v1/models, /health): a guide recipe is one model (named by its generator, else its decoder), an eval "
        "recipe each of its systems by name, each system's models loaded once. Concurrent requests decode "
        "together, and an answer is the one `w2s generate` writes for the same prompt and seed (docs/serve.md).",
        epilog="e.g. w2s serve --config recipes/tiny/guide.yaml --port 8000; recipe keys are flags too "
        "(--batch_size 16, --max_new_tokens 32).",
    )
    parser.add_argument("--config", required=True, help="a guide recipe (one system) or an eval recipe (its systems)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--systems", help="an eval recipe's systems to serve, comma-separated (default: all)")
    parser.add_argument(
        "--api_key_env", help="an environment variable holding the API key clients must send as a bearer token"
    )
    parser.add_argument("--max_body", type=int, default=1 << 20, help="request body limit in bytes (default 1 MiB)")
    parser.add_argument("--max_queue", type=int, default=1024, help="choices queued at most; past it: 503")
    parser.add_argument(
        "--max_wait_ms",
        type=float,
        default=20.0,
        help="how long a batch waits to fill after its oldest request arrived (default 20)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for flag, value in (("--max_body", args.max_body), ("--max_queue", args.max_queue)):
        if value < 1:
            parser.error(f"{flag} must be at least 1")
    if args.max_wait_ms < 0:
        parser.error("--max_wait_ms must be >= 0")
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise EvalConfigError(f"--api_key_env {args.api_key_env}: that environment variable is not set")
    elif args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "w2s serve: listening on %s without an API key (--api_key_env): anyone who reaches it may use it", args.host
        )
    configs = served_systems(args.config, overrides, args.systems)
    run_server(
        configs, host=args.host, port=args.port, api_key=key, max_body=args.max_body, max_queue=args.max_queue,
        max_wait=args.max_wait_ms / 1000, threads=args.threads,
    )  # fmt: skip
    return 0


@command("w2s bench")
def bench(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(BENCH_USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "guide":
        parser = ArgumentParser(
            prog="w2s bench guide",
            description="The decoding engine against baselines, side by side in one run (ratios, eval/bench_guide.py).",
        )
        parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024], help="new tokens per response")
        parser.add_argument("--prompts", type=int, default=8, help="prompts decoded together")
        parser.add_argument("--repeats", type=int, default=1, help="best of this many runs per method")
        parser.add_argument("--device", help="torch device (default: cuda when there is one, else cpu)")
        parser.add_argument(
            "--threads", type=int, default=1,
            help="torch CPU threads (default 1: on a shared 2-core machine, 2 threads ran up to 9x slower)",
        )  # fmt: skip
        served = parser.add_argument_group(
            "a served strong model",
            "--strong_backend openai: CBS(4,4,5) and plain sampling over the strong model on an OpenAI-compatible "
            "server (vLLM) and over the same weights in this process, at the first of --lengths (within the "
            "server's context), warmed up and alternated",
        )
        served.add_argument("--strong_backend", choices=["hf", "openai"], default="hf")
        served.add_argument("--strong_model", default="tiny-strong", help="the served model's name")
        served.add_argument(
            "--strong_tokenizer", default="tiny:strong",
            help="the folder the server serves (loaded here for the local side; default: the tiny world's strong base)",
        )  # fmt: skip
        served.add_argument(
            "--strong_base_url_env", default="W2S_STRONG_BASE_URL", help="the variable naming the server's base URL"
        )
        served.add_argument(
            "--vllm_python", metavar="PATH",
            help="start a vLLM server on 127.0.0.1 from this Python for the run instead (make vllm builds "
            ".venv-vllm/bin/python)",
        )  # fmt: skip
        shapes = parser.add_argument_group(
            "real shapes",
            "--shapes: named model shapes with real tokenizers and random weights (eval/bench_shapes.py): CBS(4,4,5) "
            "/ plain sampling of the same rows beside the compute floor, and plain sampling against transformers' "
            "generate, at each of --lengths (default 64 256), warmed up and alternated",
        )
        shapes.add_argument(
            "--shapes", nargs="+", metavar="SHAPE", choices=SHAPE_NAMES,
            help=f"the shapes to run: {', '.join(SHAPE_NAMES)}",
        )  # fmt: skip
        shapes.add_argument("--rounds", type=int, default=2, help="alternated rounds per length (best of them)")
        shapes.add_argument(
            "--profile", action="store_true", help="also where one CBS decode's time goes, at the first length"
        )
        args = parser.parse_args(argv[1:])
        if args.shapes and args.lengths == [256, 1024]:
            args.lengths = [64, 256]  # the default for --shapes
        if args.strong_backend == "openai" and args.lengths == [256, 1024]:
            args.lengths = [64]  # the default for a served run: the tiny strong base's context is 128 tokens
        return bench_guide(args)
    if argv[0] == "data":
        parser = ArgumentParser(
            prog="w2s bench data",
            description="The data builder's generation stage (the engine) against a plain `generate` loop over the "
            "same prompts, tokens per second at up to --max_new_tokens new tokens, side by side in one run, "
            "alternating which goes first (eval/bench_data.py). The target: at least 2x at 256 new tokens.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument(
            "--models", nargs="+", default=["random:6x256"],
            help="model names, or random:<layers>x<width> (a random-initialised Llama with a 2048-token context: "
            "long responses); the tiny world's models (tiny:weak tiny:strong) end theirs after about 25 tokens",
        )  # fmt: skip
        parser.add_argument("--num_prompts", type=int, default=64, help="prompts (64 x 4 samples: one full batch)")
        parser.add_argument("--num_samples", type=int, default=4, help="responses per prompt")
        parser.add_argument("--max_new_tokens", type=int, default=256, help="new tokens per response at most")
        parser.add_argument("--batch_size", type=int, default=256, help="rows per generate call (both sides)")
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument(
            "--threads", type=int, default=1, help="torch CPU threads (1: steadiest on a shared machine)"
        )
        return bench_data(parser.parse_args(argv[1:]))
    if argv[0] == "eval":
        parser = ArgumentParser(
            prog="w2s bench eval",
            description="`w2s eval` over several processes (accelerate launch) against one process on the tiny "
            "world's evaluation recipe (recipes/tiny/eval.yaml), items per second, side by side in one run, "
            "alternating which goes first; every process on one torch thread (eval/bench_scale.py).",
        )
        parser.add_argument(
            "--num_instructions", type=int, default=240,
            help="instructions of tiny:test (default 240, the recipe's 60 x 4: per-item work well above start-up)",
        )  # fmt: skip
        parser.add_argument(
            "--lc_bootstrap_samples", type=int, default=200,
            help="the LC win rate's bootstrap refits (the recipe's 200; serial in the report: 0 times the rest)",
        )  # fmt: skip
        parser.add_argument("--processes", type=int, default=2, help="processes of the launched side")
        parser.add_argument("--rounds", type=int, default=2)
        args = parser.parse_args(argv[1:])
        if args.processes < 2:
            parser.error("--processes must be at least 2")
        return bench_eval(args)
    if argv[0] == "serve":
        parser = ArgumentParser(
            prog="w2s bench serve",
            description="`w2s serve` under concurrent clients against offline `w2s generate` of the same prompts at "
            "the same batch size, in one run: throughput (answers per second) of each and their ratio, the served "
            "requests' p50/p95 latency, and whether every served answer equals the offline one (eval/bench_serve.py).",
        )
        parser.add_argument("--config", default="recipes/tiny/guide.yaml", help="the guide recipe served")
        parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
        parser.add_argument("--num_prompts", type=int, default=128, help="prompts of tiny:test (default 128)")
        parser.add_argument("--batch_size", type=int, help="both sides' batch size (default: the recipe's)")
        parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating which side goes first")
        parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each side (default 1)")
        parser.add_argument("--max_wait_ms", type=float, default=20.0, help="the server's --max_wait_ms")
        args, overrides = parser.parse_known_args(argv[1:])
        if args.clients < 1 or args.num_prompts < 1 or args.rounds < 1:
            parser.error("--clients, --num_prompts and --rounds must be at least 1")
        args.overrides = overrides
        return bench_serve(args)
    print(f"w2s bench: unknown benchmark {argv[0]!r}: choose guide, data, eval or serve", file=sys.stderr)
    return 2
