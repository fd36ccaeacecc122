"""Prompt formats: how a model reads a prompt (plain strings; applied to a tokenizer by guide/models.py).

* `chat` (the default): the model's own chat template; a model without one is an error naming the key;
* `raw`: the prompt text itself, as base models read it (after the BOS token where the tokenizer adds
  one); the response follows the prompt directly, so a prompt carries its own separator (or use a
  template string);
* a template string holding `{prompt}`, e.g. `"Question: {prompt}\\nAnswer:"`.

Raw text and template strings become the tokenizer's chat template, so that prompts, and whole
conversations for judges, render one way everywhere; a system message renders as its text and a blank line.
"""

from __future__ import annotations

import json

from w2s.guide.commands import GuideError

FORMATS = ("chat", "raw")


def check_prompt_format(value: str, key: str = "prompt_format") -> None:
    if not isinstance(value, str) or (value not in FORMATS and "{prompt}" not in value):
        raise GuideError(
            f"{key}: {value!r} is not a prompt format: use chat (the model's chat template), raw (the prompt "
            'text as it is) or a template string holding {prompt}, e.g. "Question: {prompt}\\nAnswer:"'
        )


def format_template(prompt_format: str, bos: str = "") -> str:
    """The Jinja chat template that renders `prompt_format` (raw or a template string), `bos` first."""
    check_prompt_format(prompt_format)
    head, _, tail = ("{prompt}" if prompt_format == "raw" else prompt_format).partition("{prompt}")

    def literal(text: str) -> str:  # a Jinja string literal (JSON's escapes are valid in Jinja)
        return "{{ " + json.dumps(text) + " }}"

    return (
        literal(bos)
        + "{%- for m in messages -%}"
        + "{%- if m['role'] == 'system' -%}{{ m['content'] }}"
        + literal("\n\n")
        + "{%- elif m['role'] == 'user' -%}"
        + literal(head)
        + "{{ m['content'] }}"
        + literal(tail)
        + "{%- else -%}{{ m['content'] }}{%- endif -%}"
        + "{%- endfor -%}"
    )
