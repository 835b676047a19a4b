"""What the trainer trains each image's caption as, per method, so `tunelab check` says what will happen.

The scan (`engine.project`) flags captions as a caption-trained fine-tune sees them ("no caption",
"caption too long"). Whether a flag matters depends on the method, and the trainer decides it in
`engine.train.methods.*`; this module states the same rules without torch:

- `lora`, `full`, and `dreambooth` with an empty `instance_prompt`: the caption as scanned. An image
  with no caption trains with an empty caption (the text encoder's empty prompt), so it ties the
  subject to no word: a real warning.
- `dreambooth` with an `instance_prompt`: every instance image trains with that text; captions are not
  read, so their flags say nothing about the run.
- `textual_inversion` and `pivotal`: `engine.placeholder.with_placeholder` (the function the trainer
  calls): a caption that says the placeholder trains as written, any other gets `<token>, ` in front,
  and an image with no caption trains on the placeholder alone. Captions are not needed. What is
  really wrong is a sample prompt list that never says the placeholder (the contact sheet cannot show
  what it learns), which the trainer warns about too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from engine.config import sample_prompts
from engine.placeholder import METHODS as PLACEHOLDER_METHODS
from engine.placeholder import expand_placeholder, mentions_placeholder, placeholder_names, with_placeholder
from engine.project import FLAG_NO_CAPTION, FLAG_TOO_LONG

FLAG_EMPTY = "empty caption"  # a sidecar that is there but blank (engine.project)


@dataclass
class CaptionUse:
    """How one config's method uses the scanned captions."""
    lines: list[str] = field(default_factory=list)              # "captions: …" notes for check's summary
    warnings: list[str] = field(default_factory=list)           # real problems of the method, not of one image
    dropped_flags: tuple[str, ...] = ()                          # item flags (prefixes) that do not apply
    flag_notes: dict[str, str] = field(default_factory=dict)    # flag kind → what the trainer does about it
    trained: Callable[[str], str] = lambda caption: caption      # scanned caption → the text trained
    placeholder_tokens: list[str] = field(default_factory=list)  # tokens the trainer adds (one token each)

    def applies(self, flag: str) -> bool:
        return not flag.startswith(self.dropped_flags) if self.dropped_flags else True


def caption_use(cfg: Any, items: list[Any], goals: dict[str, list[str]]) -> CaptionUse:
    """`items`: the scan's usable `engine.project.Item`s (`caption`: None or "" when there is none)."""
    if cfg.method == "dreambooth" and cfg.dreambooth.instance_prompt:
        return CaptionUse(
            lines=[f"captions: not used; dreambooth.instance_prompt {cfg.dreambooth.instance_prompt!r} is the "
                   "text of every instance image (empty it to train on the captions)"],
            dropped_flags=(FLAG_NO_CAPTION, FLAG_EMPTY, FLAG_TOO_LONG),
            trained=lambda caption: cfg.dreambooth.instance_prompt)
    if cfg.method in PLACEHOLDER_METHODS:
        return _placeholder_use(cfg, items, goals)
    note = "trained with an empty caption, so they tie the subject to no word"
    if cfg.method == "dreambooth":
        note += "; set dreambooth.instance_prompt (e.g. \"a photo of sks dog\") or caption them"
    return CaptionUse(flag_notes={FLAG_NO_CAPTION: note, FLAG_EMPTY: note})


def _placeholder_use(cfg: Any, items: list[Any], goals: dict[str, list[str]]) -> CaptionUse:
    token = cfg.textual_inversion.placeholder_token
    names = placeholder_names(token, cfg.textual_inversion.num_vectors)

    def trained(caption: str) -> str:  # what PlaceholderTokens.prepare_examples makes of it
        return expand_placeholder(with_placeholder(caption or "", token), token, len(names))

    said = [i for i in items if i.caption and mentions_placeholder(i.caption, token)]
    other = [i for i in items if i.caption and not mentions_placeholder(i.caption, token)]
    none = [i for i in items if not i.caption]
    what = "textual inversion" if cfg.method == "textual_inversion" else "pivotal tuning"
    lines = [f"captions: {what} trains every image with the placeholder {token!r} in its text; "
             "captions are optional"]
    if said:
        lines.append(f"  {len(said)} caption(s) say {token!r}: trained as written")
    if other:
        lines.append(f"  {len(other)} caption(s) do not: {token + ', '!r} is put in front "
                     f"(e.g. {other[0].rel}: {with_placeholder(other[0].caption, token)!r})")
    if none:
        lines.append(f"  {len(none)} image(s) with no caption: trained on {token!r} alone")
    if len(names) > 1:
        lines.append(f"  {token!r} stands for its {len(names)} vector tokens ({' '.join(names)}) in training")
    warnings = []
    prompts = sample_prompts(cfg, goals)
    if prompts and not any(mentions_placeholder(p.text, token) for p in prompts):
        source = "sample.prompts" if cfg.sample.prompts else "the project's goals (the default sample prompts)"
        warnings.append(f"no sample prompt says textual_inversion.placeholder_token {token!r}, so the contact "
                        f"sheet will not show what it learns; put it in {source}")
    return CaptionUse(lines=lines, warnings=warnings, dropped_flags=(FLAG_NO_CAPTION, FLAG_EMPTY),
                      trained=trained, placeholder_tokens=names)
