"""docs/config.md reads as a Markdown reference: every key one table row, defaults as a user writes them."""
from __future__ import annotations

from engine.config import RunConfig
from engine.schema import render_reference


def reference() -> str:
    return render_reference(RunConfig, "Run config reference", "")


def test_every_table_row_is_one_line_with_list_defaults_inline():
    lines = reference().splitlines()
    in_table = False
    for n, line in enumerate(lines, 1):
        if line.startswith("| key |"):
            in_table = True
        elif in_table and not line:
            in_table = False
        elif in_table:
            assert line.startswith(("| `", "|---")) and line.endswith("|"), f"line {n} breaks its table: {line!r}"
    text = "\n".join(lines)
    assert '| `target_modules` | list of string | `["to_q", "to_k", "to_v", "to_out.0"]` |' in text
    assert "| `seeds` | list of int | `[42]` |" in text


def test_sample_prompts_says_strings_are_accepted():
    assert "| `prompts` | list of string or table |" in reference()
