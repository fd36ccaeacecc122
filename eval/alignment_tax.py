"""The alignment tax: how a system's strong model does on standard benchmarks (lm-evaluation-harness).

Guided decoding leaves the strong model's weights untouched, so its benchmark
scores are those of the base; what a guide can cost shows up when a system
*trains* the strong model (or in the guide's own scores). Run with
`w2s eval --config <recipe> --lm_eval_tasks arc_easy,hellaswag [--lm_eval_limit 200]`
after `pip install lm-eval`; results go to `<output_dir>/alignment_tax.json`.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from w2s.eval.config import EvalConfig, EvalConfigError
from w2s.eval.store import write_json
from w2s.guide.models import resolve_model_path

logger = logging.getLogger(__name__)


def check_lm_eval() -> None:
    """Raises EvalConfigError unless lm-evaluation-harness is importable (checked before any generation)."""
    if importlib.util.find_spec("lm_eval") is None:
        raise EvalConfigError("lm_eval_tasks: lm-evaluation-harness is not installed (pip install lm-eval)")


def run_lm_eval(model: str, tasks: list[str], *, limit: int | None = None, batch_size: int = 8) -> dict:
    """lm-evaluation-harness scores of one HF model on `tasks` (needs the `lm-eval` package)."""
    check_lm_eval()
    from lm_eval import simple_evaluate

    path = resolve_model_path(model)
    out = simple_evaluate(
        model="hf",
        model_args=f"pretrained={path},trust_remote_code=False",
        tasks=tasks,
        limit=limit,
        batch_size=batch_size,
    )
    return out["results"]


def alignment_tax(config: EvalConfig) -> dict:
    """Runs the recipe's lm-eval tasks on every distinct strong model of its (local) systems; writes alignment_tax.json."""
    tasks = [t.strip() for t in (config.lm_eval_tasks or "").split(",") if t.strip()]
    models = sorted({str(s.guide["strong_model"]) for s in config.system_list() if s.guide is not None})
    results = {}
    for model in models:
        logger.info("alignment tax: lm-eval %s on %s", ",".join(tasks), model)
        results[model] = run_lm_eval(model, tasks, limit=config.lm_eval_limit)
    write_json(Path(config.output_dir) / "alignment_tax.json", results)
    return results
