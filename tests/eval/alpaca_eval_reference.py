"""AlpacaEval's own numbers for the annotations of `lc_demo_annotations.json` (not a test: it needs alpaca_eval).

test_alpaca_eval_fidelity.py compares w2s's metrics with the values this script prints. It runs in a virtual
environment of its own, never w2s's (alpaca_eval is no dependency of w2s or of its tests):

    python3 -m venv ../ae-venv && ../ae-venv/bin/pip install alpaca_eval==0.6.6
    ../ae-venv/bin/python tests/eval/alpaca_eval_reference.py                # the fixture's reference values
    ../ae-venv/bin/python tests/eval/alpaca_eval_reference.py --annotations runs/demo/eval   # an eval folder, as JSON

How: alpaca_eval 0.6.6's `alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate(annotations,
glm_info=GLM_INFO[name], save_weights_dir=None, is_warn_extreme_changes=False)`, with GLM `length_controlled_minimal`
(no instruction difficulty) or `length_controlled_noreg` (difficulty, no regularisation towards its gamed
baselines). Annotations carry output_1 (reference) and output_2 (system) as strings of the recorded lengths.
That function downloads `df_gamed.csv` from the hub and reads only its `instruction_difficulty` column there (by
annotation row); the hub cannot be reached from here, so the download is replaced by a local CSV holding the
difficulties given (zeros when there are none, which the minimal GLM never reads). Nothing else is replaced.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import warnings
from pathlib import Path

import pandas as pd
from alpaca_eval.metrics import glm_winrate

FIXTURE = Path(__file__).with_name("lc_demo_annotations.json")


def alpaca_eval_metrics(annotations: list[dict], difficulty: list[float] | None = None) -> dict:
    """alpaca_eval's win rate, its SE and LC win rate of AlpacaEval annotations (one system against its reference)."""
    df = pd.DataFrame(annotations)
    with tempfile.TemporaryDirectory() as tmp:
        gamed = Path(tmp) / "df_gamed.csv"
        pd.DataFrame(
            {"index": range(len(df)), "instruction_difficulty": difficulty or [0.0] * len(df), "model": "none"}
        ).to_csv(gamed, index=False)
        glm_winrate.hf_hub_download = lambda **_: str(gamed)
        glm = "length_controlled_minimal" if difficulty is None else "length_controlled_noreg"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's deprecation notices about alpaca_eval's arguments
            m = glm_winrate.get_length_controlled_winrate(
                df, glm_info=glm_winrate.GLM_INFO[glm], save_weights_dir=None, is_warn_extreme_changes=False
            )
    keys = ("win_rate", "standard_error", "n_total", "length_controlled_winrate")
    return {k: float(m[k]) for k in keys}


def fixture_annotations(system: dict, len_reference: list[int], missing: list[int] = ()) -> list[dict]:
    """AlpacaEval annotations with outputs of the fixture's lengths; the preferences at `missing` blanked (NaN)."""
    return [
        {
            "instruction": f"instruction {n}",
            "output_1": "r" * lr,
            "output_2": "s" * ls,
            "generator_1": "reference",
            "generator_2": "system",
            "annotator": "fixture",
            "preference": math.nan if n in missing else p,
        }
        for n, (p, ls, lr) in enumerate(zip(system["preferences"], system["len_system"], len_reference, strict=True))
    ]


def fixture_values() -> dict:
    fx = json.loads(FIXTURE.read_text())
    out: dict = {"none": {}, "difficulty": {}, "missing": {}}
    for name, system in fx["systems"].items():
        ann = fixture_annotations(system, fx["len_reference"])
        out["none"][name] = alpaca_eval_metrics(ann)["length_controlled_winrate"]
        out["difficulty"][name] = alpaca_eval_metrics(ann, fx["difficulty"])["length_controlled_winrate"]
        out["missing"][name] = alpaca_eval_metrics(fixture_annotations(system, fx["len_reference"], fx["missing"]))
    return out


def folder_values(folder: Path) -> dict:
    """alpaca_eval's metrics of every `<folder>/<system>/annotations.json` with a reference (LC: no difficulty)."""
    out = {}
    for path in sorted(folder.glob("*/annotations.json")):
        ann = json.loads(path.read_text())
        if ann and "output_1" in ann[0]:
            out[path.parent.name] = alpaca_eval_metrics(ann)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, help="an eval output folder: print its systems' metrics as JSON")
    args = parser.parse_args()
    values = folder_values(args.annotations) if args.annotations else fixture_values()
    print(json.dumps(values, indent=1))
