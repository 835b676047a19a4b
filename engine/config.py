"""The run config: one typed tree of dataclasses, whose defaults live here and nowhere else.

A run config is a TOML file in a project's `configs/`. `load_run_config` validates it (every problem
at once, with file:line and the accepted values) and applies `--set key=value` overrides;
`dump_config` writes the fully resolved config that is frozen into a run directory.
`docs/config.md` is generated from this module (`python -m engine.config --docs`).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w

from engine.schema import ConfigError, Problem, from_dict, load_toml, opt, override_key, parse_toml, render_reference, to_dict

Method = Literal["lora", "full", "dreambooth", "textual_inversion", "pivotal"]
METHODS: tuple[str, ...] = Method.__args__  # type: ignore[attr-defined]
GOAL_KINDS = ("accuracy", "flexibility", "preservation")
# What a config that names no base trains: SD 1.5 from the local Hugging Face cache (where
# `huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5` puts it). Never the tiny model:
# a run on a GPU box must not quietly train a toy.
DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass
class ModelConfig:
    base: str = opt(DEFAULT_BASE, help="The base model: a diffusers folder, a single-file checkpoint (.safetensors), "
                    "a hub id already in the local Hugging Face cache (default: SD 1.5), or `tiny` (the built-in "
                    "tiny model: no download, trains on a CPU in minutes, for trying tunelab out). Relative paths "
                    "are the project folder's; with `--set`, the current folder's.")
    config: str = opt("", help="For a single-file base: a diffusers folder or cached hub id holding the component "
                      "configs (empty: the diffusers defaults for SD 1.x).")
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = opt(
        "auto", help="What the UNet predicts; `auto` takes the base's scheduler config.")


@dataclass
class DataConfig:
    resolution: int = opt(512, help="Training size in pixels (square, a multiple of 8); images are resized so "
                          "the short side matches, then cropped.", min=8, max=4096)
    crop: Literal["center", "random"] = opt("center", help="How the long side is cropped to the resolution.")
    flip: bool = opt(False, help="Random horizontal flip. Latent caching then stores both variants.")
    caption_dropout: float = opt(0.0, help="Probability of training a step with an empty caption.", min=0, max=1)
    validation_split: float = opt(0.0, help="Fraction of images held out for the validation loss (deterministic).",
                                  min=0, max=0.9)
    validation_folder: str = opt("", help="A project folder of held-out images (overrides validation_split).")
    concepts: list[str] = opt([], help="Concept folders to train on (empty: all concepts in project.toml).")
    cache_latents: bool = opt(True, help="Cache VAE latents under the project's .cache/ (when the VAE is frozen).")
    cache_text: bool = opt(True, help="Cache text-encoder outputs (when the text encoder is frozen and "
                           "caption dropout does not need the empty caption uncached).")
    num_workers: int = opt(0, help="Data-loader worker processes (0: load in the training process).", min=0, max=64)


@dataclass
class TrainConfig:
    epochs: int = opt(10, help="Epochs to train.", min=1, max=100000)
    max_steps: int = opt(0, help="Stop after this many optimiser steps (0: no limit beyond epochs).", min=0)
    batch_size: int = opt(1, help="Images per step per process.", min=1, max=4096)
    gradient_accumulation: int = opt(1, help="Micro-batches per optimiser step.", min=1, max=1024)
    learning_rate: float = opt(1e-4, help="Peak learning rate (LoRA ~1e-4, full fine-tune ~1e-5).", gt=0, max=1)
    text_encoder_learning_rate: float = opt(0.0, help="Learning rate for the text encoder (0: same as "
                                            "learning_rate).", min=0, max=1)
    scheduler: Literal["constant", "cosine", "linear"] = opt("constant", help="Learning-rate schedule after warmup.")
    warmup_steps: int = opt(0, help="Linear warmup steps.", min=0)
    optimizer: Literal["adamw", "adamw8bit"] = opt("adamw", help="`adamw8bit` needs bitsandbytes installed.")
    weight_decay: float = opt(1e-2, help="AdamW weight decay.", min=0, max=1)
    max_grad_norm: float = opt(1.0, help="Gradient clipping norm (0: off).", min=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = opt(
        "auto", help="Mixed precision. `auto`: bf16 on a GPU that has it, fp16 on an older GPU, `no` on a CPU "
        "(the start event says which).")
    gradient_checkpointing: bool = opt(False, help="Trade compute for memory in the UNet.")
    seed: int = opt(42, help="Seed for data order, noise and timesteps.", min=0)
    ema: bool = opt(False, help="Keep an exponential moving average of trained weights (full fine-tune); "
                    "samples and exports use it.")
    ema_decay: float = opt(0.9999, help="EMA decay per step.", gt=0, max=1)
    noise_offset: float = opt(0.0, help="Noise offset (helps very dark/bright images).", min=0, max=1)
    min_snr_gamma: float = opt(0.0, help="Min-SNR loss weighting gamma (0: off; 5 is typical).", min=0)
    log_every: int = opt(10, help="Write a progress event every N optimiser steps.", min=1)
    compile: bool = opt(False, help="torch.compile the UNet (GPU; reports compile time).")


@dataclass
class LoraConfig:
    rank: int = opt(16, help="LoRA rank.", min=1, max=1024)
    alpha: float = opt(16.0, help="LoRA alpha (scale = alpha / rank).", gt=0)
    dropout: float = opt(0.0, help="LoRA dropout.", min=0, max=1)
    target_modules: list[str] = opt(["to_q", "to_k", "to_v", "to_out.0"],
                                    help="UNet module names to adapt (attention projections by default): the end of a "
                                    "module's full name, as peft matches it (`to_q`, `attn2.to_k`); `tunelab check` "
                                    "refuses names that match no Linear or Conv2d layer and lists the accepted ones.")
    train_text_encoder: bool = opt(False, help="Also train a LoRA on the text encoder's attention.")
    text_encoder_rank: int = opt(8, help="Rank of the text-encoder LoRA.", min=1, max=1024)


@dataclass
class FullConfig:
    train_text_encoder: bool = opt(False, help="Also fine-tune the text encoder.")


@dataclass
class DreamBoothConfig:
    instance_prompt: str = opt("", help="Caption for every instance image, with the identifier (`a sks dog`). "
                               "Empty: use the concepts' captions.")
    class_prompt: str = opt("", help="Prompt for the class images (`a dog`); required with prior preservation.")
    prior_preservation: bool = opt(True, help="Generate class images with the base model and train on them too.")
    num_class_images: int = opt(100, help="Class images to generate (cached and reused).", min=1)
    class_steps: int = opt(30, help="Denoising steps (DPM++) for each class image.", min=1, max=1000)
    class_guidance: float = opt(7.5, help="Guidance scale for the class images.", min=0)
    prior_loss_weight: float = opt(1.0, help="Weight of the prior-preservation loss.", min=0)
    weights: Literal["lora", "full"] = opt("lora", help="Train LoRA weights (see [lora]) or the full UNet.")


@dataclass
class TextualInversionConfig:
    placeholder_token: str = opt("<concept>", help="The new token to learn; use it in captions and prompts "
                                 "(captions without it get it prepended).")
    initializer_token: str = opt("object", help="An existing single-token word the new embedding starts from.")
    num_vectors: int = opt(1, help="Embedding vectors for the placeholder: `<concept>` stands for the tokens "
                           "`<concept> <concept>_1 …` (diffusers' multi-vector convention).", min=1, max=75)


@dataclass
class PivotalConfig:
    ti_fraction: float = opt(0.5, help="Share of steps that train the embedding before the switch to LoRA; "
                             "method `pivotal` refuses 1 (the LoRA would never train).", gt=0, max=1)
    embedding_learning_rate: float = opt(5e-3, help="Learning rate of the embedding (the LoRA trains at "
                                         "train.learning_rate).", gt=0, max=1)
    train_embeddings_after_switch: bool = opt(False, help="Keep training the embedding after the switch "
                                              "(false: freeze it).")
    bundle_embedding: bool = opt(True, help="Also put the embedding into the kohya LoRA file "
                                 "(`bundle_emb.<name>.string_to_param.*`, which A1111 loads with the LoRA); the "
                                 "separate embedding files are written either way. diffusers' `load_lora_weights` "
                                 "does not take such a file: it loads `pytorch_lora_weights.safetensors`.")


@dataclass
class SaveConfig:
    epochs: list[int] = opt([], help="Epochs to save at, e.g. [1, 2, 5, 15, 30, 45, 60, 70, 100]; each within "
                            "train.epochs (a `--set train.epochs=N` below one is refused, never trimmed silently: "
                            "the error names the `--set 'save.epochs=[…]'` to add).")
    every_n_epochs: int = opt(0, help="Also save every N epochs (0: off).", min=0)
    every_n_steps: int = opt(0, help="Also save every N optimiser steps (0: off).", min=0)
    last: bool = opt(True, help="Save at the end of training.")
    keep_last: int = opt(0, help="Delete older checkpoints beyond this many (0: keep all). Checkpoints in "
                         "`epochs` are never deleted.", min=0)
    formats: list[Literal["diffusers", "single_file"]] = opt(
        ["diffusers", "single_file"],
        help="Exports per checkpoint: `diffusers` (PEFT/diffusers LoRA, diffusers folder, diffusers embedding) "
             "and `single_file` (kohya/A1111 LoRA, one .safetensors checkpoint, A1111 embedding).")
    state: bool = opt(True, help="Keep optimiser state for exact resume.")


@dataclass
class SamplePrompt:
    """One sample prompt; a plain string in `sample.prompts` is a prompt with the section's defaults."""

    text: str = opt(help="The prompt.")
    kind: Literal["accuracy", "flexibility", "preservation", "other"] = opt(
        "other", help="The goal kind this prompt checks (rows of the contact sheet are grouped by it).")
    seeds: list[int] = opt([], help="Seeds for this prompt (empty: the section's seeds).")
    guidance: float = opt(0.0, help="Guidance for this prompt (0: the section's).", min=0)
    steps: int = opt(0, help="Denoising steps for this prompt (0: the section's).", min=0)
    negative_prompt: str = opt("", help="Negative prompt for this prompt (empty: the section's).")

    @classmethod
    def from_string(cls, text: str) -> "SamplePrompt":
        return cls(text=text)


@dataclass
class SampleConfig:
    prompts: list[SamplePrompt] = opt([], help="Prompts to sample: strings or tables. Empty: the project's goals "
                                      "(written into the run's config at launch, so later goal edits do not shift its rows).")
    seeds: list[int] = opt([42], help="Seeds; every prompt is rendered once per seed at every checkpoint.")
    steps: int = opt(20, help="Denoising steps (DPM++ needs ~20 for what DDIM needs 50 for).", min=1, max=1000)
    guidance: float = opt(7.5, help="Classifier-free guidance scale.", min=0, max=50)
    negative_prompt: str = opt("", help="Negative prompt.")
    width: int = opt(0, help="Sample width, a multiple of 8 (0: data.resolution).", min=0, max=4096)
    height: int = opt(0, help="Sample height, a multiple of 8 (0: data.resolution).", min=0, max=4096)
    scheduler: Literal["dpm++", "ddim", "euler", "euler_a"] = opt("dpm++", help="Sampling scheduler.")
    at_start: bool = opt(True, help="Sample before training (epoch 0), the contact sheet's first column.")
    batch_size: int = opt(8, help="Images rendered at once.", min=1, max=256)


@dataclass
class LaunchConfig:
    num_processes: int = opt(1, help="Processes (GPUs) on this machine; passed to accelerate.", min=1, max=1024)
    num_machines: int = opt(1, help="Machines; passed to accelerate.", min=1, max=1024)
    machine_rank: int = opt(0, help="This machine's rank; passed to accelerate.", min=0)
    main_process_ip: str = opt("", help="Rank-0 machine's address for multi-node; passed to accelerate.")
    main_process_port: int = opt(29500, help="Rank-0 port; passed to accelerate.", min=1, max=65535)
    accelerate_config: str = opt("", help="An accelerate config file (DeepSpeed/FSDP); passed as --config_file. "
                                 "Relative: the project folder's; with `--set`, the current folder's.")
    gpu_ids: str = opt("", help="GPU ids to use, e.g. `0,1` (empty: all).")
    stop_timeout_s: float = opt(600.0, help="Seconds a stopping trainer gets to save its checkpoint and exit "
                                "before the supervisor terminates its processes (SIGTERM, then SIGKILL); allow "
                                "for the biggest checkpoint save (a full fine-tune's state is several GB).",
                                min=10, max=604800)


@dataclass
class BudgetConfig:
    max_hours: float = opt(0.0, help="Stop gracefully (with a checkpoint) after this many hours (0: no limit).",
                           min=0)
    gpu_hourly_cost: float = opt(0.0, help="Price per hour of the machine, for cost so far and per epoch.", min=0)
    currency: str = opt("$", help="Currency symbol shown with costs.")


@dataclass
class RunConfig:
    method: Method = opt("lora", help="Training method.")
    description: str = opt("", help="Free text shown in the run list.")
    model: ModelConfig = opt(factory=ModelConfig, help="The base model.")
    data: DataConfig = opt(factory=DataConfig, help="Dataset preparation.")
    train: TrainConfig = opt(factory=TrainConfig, help="Optimisation.")
    lora: LoraConfig = opt(factory=LoraConfig, help="LoRA settings (method `lora`, `pivotal`, and DreamBooth with "
                           "weights = \"lora\").")
    full: FullConfig = opt(factory=FullConfig, help="Full fine-tune settings (method `full`).")
    dreambooth: DreamBoothConfig = opt(factory=DreamBoothConfig, help="DreamBooth settings (method `dreambooth`).")
    textual_inversion: TextualInversionConfig = opt(factory=TextualInversionConfig,
                                                    help="Textual inversion (methods `textual_inversion`, `pivotal`).")
    pivotal: PivotalConfig = opt(factory=PivotalConfig, help="Pivotal tuning: textual inversion, then LoRA.")
    save: SaveConfig = opt(factory=SaveConfig, help="Checkpoints and exports.")
    sample: SampleConfig = opt(factory=SampleConfig, help="Samples at every save, for the contact sheet.")
    launch: LaunchConfig = opt(factory=LaunchConfig, help="How `accelerate launch` starts the trainer.")
    budget: BudgetConfig = opt(factory=BudgetConfig, help="Time and money.")

    def check(self) -> list[tuple[str, str]]:
        """Cross-field rules: (key, message) pairs."""
        out = []
        if self.method == "dreambooth" and self.dreambooth.prior_preservation and not self.dreambooth.class_prompt:
            out.append(("dreambooth.class_prompt", "is required when dreambooth.prior_preservation = true"))
        if self.method in ("textual_inversion", "pivotal"):
            tok = self.textual_inversion.placeholder_token
            if not tok.strip() or any(c.isspace() for c in tok):
                out.append(("textual_inversion.placeholder_token", f"= {tok!r}: must be one word with no spaces"))
            elif tok != tok.lower():
                out.append(("textual_inversion.placeholder_token", f"= {tok!r}: must be lower case, e.g. "
                            f"{tok.lower()!r} (CLIP lowercases prompts; diffusers then misses a multi-vector token)"))
        if self.method == "pivotal" and self.pivotal.ti_fraction >= 1:
            out.append(("pivotal.ti_fraction", f"= {self.pivotal.ti_fraction}: must be below 1, or the LoRA never "
                        "trains (for the embedding alone use method = \"textual_inversion\")"))
        if self.launch.num_machines > 1 and not self.launch.main_process_ip:
            out.append(("launch.main_process_ip", "is required when launch.num_machines > 1"))
        if self.launch.machine_rank >= self.launch.num_machines:
            out.append(("launch.machine_rank", f"= {self.launch.machine_rank}: must be < launch.num_machines "
                        f"({self.launch.num_machines})"))
        if self.data.resolution % 8:
            out.append(("data.resolution", f"= {self.data.resolution}: must be a multiple of 8 (the VAE works in "
                        f"8-pixel blocks), e.g. {self.data.resolution // 8 * 8 or 8}"))
        for side in ("width", "height"):
            v = getattr(self.sample, side)
            if v % 8:
                out.append((f"sample.{side}", f"= {v}: must be a multiple of 8 (or 0: data.resolution), e.g. {v // 8 * 8 or 8}"))
        bad = [e for e in self.save.epochs if e < 1 or e > self.train.epochs]
        if bad:
            fit = [e for e in self.save.epochs if e not in bad]
            longer = f", or raise train.epochs to {max(bad)}" if max(bad) > self.train.epochs else ""
            out.append(("save.epochs", f"= {bad}: each must be between 1 and train.epochs ({self.train.epochs}); "
                        f"keep those that fit, save.epochs = {fit}{longer}"))
        return out


# ---------------------------------------------------------------------------------------------


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load and validate a run config, with `key=value` overrides (TOML values; bare words are strings)."""
    path = Path(path)
    data, lines = load_toml(path)
    problems: list[Problem] = []
    for item in overrides:
        try:
            key = apply_override(data, item)
            lines[key] = 0  # problems with an overridden key point at --set, not at the file
            _from_cwd(data, key)
        except ValueError as e:
            problems.append(Problem("--set", None, override_key(item), str(e)))
    try:
        cfg = from_dict(RunConfig, data, file=str(path), lines=lines)
    except ConfigError as e:
        raise ConfigError(problems + [_one_go_hint(p, data, overrides) for p in e.problems]) from None
    if problems:
        raise ConfigError(problems)
    return cfg


# Keys whose value is a file-system path. Relative in a config file: the project folder's (a project
# moves as a whole); relative in `--set`: the shell's current folder's, as anything typed at a prompt,
# and made absolute there, so the run's frozen config.toml reads the same file at every attempt.
# (`data.validation_folder` names a folder of the project, not a path: it stays as given.)
PATH_KEYS = ("model.base", "model.config", "launch.accelerate_config")


def _from_cwd(data: dict[str, Any], key: str) -> None:
    if key not in PATH_KEYS:
        return
    section, name = key.split(".")
    value = data[section][name]
    if not isinstance(value, str) or not value.strip():
        return  # the schema reports a non-string; empty means unset
    if key == "launch.accelerate_config":
        data[section][name] = os.path.abspath(os.path.expanduser(value.strip()))
    else:
        from engine.basemodel import command_line_spec  # light: file system only

        data[section][name] = command_line_spec(value, Path.cwd())


def _one_go_hint(problem: Problem, data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> Problem:
    """`--set train.epochs=1` against the file's `save.epochs = [1, 3]`: the save list is the user's to
    change, so say the one command line that does both (`--set 'save.epochs=[1]'`) rather than change it."""
    keys = {override_key(o) for o in overrides}
    if problem.key != "save.epochs" or "train.epochs" not in keys or "save.epochs" in keys:
        return problem
    try:
        epochs = data["train"]["epochs"]
        fit = [e for e in data["save"]["epochs"] if 1 <= e <= epochs]
    except (KeyError, TypeError):
        return problem
    return dataclasses.replace(problem, message=f"{problem.message} (with --set train.epochs={epochs}, add "
                               f"--set 'save.epochs={fit}' to the same command)")


def parse_run_config(text: str, file: str = "<config>") -> RunConfig:
    data, lines = parse_toml(text, file)
    return from_dict(RunConfig, data, file=file, lines=lines)


def apply_override(data: dict[str, Any], item: str) -> str:
    """`train.learning_rate=3e-4` → data["train"]["learning_rate"] = 3e-4 (the value is TOML)."""
    if "=" not in item:
        raise ValueError(f"{item!r}: expected key=value, e.g. train.epochs=20")
    key, raw = (s.strip() for s in item.split("=", 1))
    if not key:
        raise ValueError(f"{item!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: a string
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"{key}: {p} is not a table")
    node[parts[-1]] = value
    return key


METHOD_SECTIONS = ("lora", "full", "dreambooth", "textual_inversion", "pivotal")


def used_method_sections(cfg: RunConfig) -> set[str]:
    """The per-method sections that `cfg.method` reads (DreamBooth trains LoRA or full weights; pivotal
    is textual inversion, then LoRA)."""
    if cfg.method == "dreambooth":
        return {"dreambooth", cfg.dreambooth.weights}
    return {"pivotal": {"pivotal", "textual_inversion", "lora"}}.get(cfg.method, {cfg.method})


def dump_config(cfg: RunConfig, *, used_sections_only: bool = False) -> str:
    """The fully resolved config as TOML (every default filled in), as frozen into a run directory.
    `used_sections_only` leaves out the sections of methods this config does not use (for people:
    new-config templates, `tunelab check`)."""
    data = to_dict(cfg)
    if used_sections_only:
        for section in set(METHOD_SECTIONS) - used_method_sections(cfg):
            data.pop(section, None)
    return tomli_w.dumps(data)


def default_config(method: str = "lora") -> RunConfig:
    """A starting config for a method, with the settings practitioners use (see DOMAIN.md)."""
    cfg = RunConfig(method=method)  # type: ignore[arg-type]
    if method in ("full",) or (method == "dreambooth"):
        cfg.train.learning_rate = 1e-5 if method == "full" else 1e-4
    if method == "full":
        cfg.train.ema = True
    if method == "textual_inversion":
        cfg.train.learning_rate = 5e-3
    return cfg


def goal_prompts(goals: dict[str, list[str]]) -> list[SamplePrompt]:
    """The project's goals as sample prompts, in accuracy/flexibility/preservation order."""
    return [SamplePrompt(text=t, kind=k) for k in GOAL_KINDS for t in goals.get(k, [])]  # type: ignore[arg-type]


def sample_prompts(cfg: RunConfig, goals: dict[str, list[str]]) -> list[SamplePrompt]:
    """The prompts to sample: the config's, or else the project's goals in accuracy/flexibility/preservation
    order. Per-prompt seeds/guidance/steps are filled from the section so every prompt is complete."""
    s = cfg.sample
    prompts = list(s.prompts) or goal_prompts(goals)
    out = []
    for p in prompts:
        out.append(dataclasses.replace(
            p,
            seeds=list(p.seeds or s.seeds),
            guidance=p.guidance or s.guidance,
            steps=p.steps or s.steps,
            negative_prompt=p.negative_prompt or s.negative_prompt,
        ))
    return out


DOCS_INTRO = (
    "Generated from `engine/config.py` by `python -m engine.config --docs > docs/config.md`; a test keeps it "
    "current. A run config is a TOML file in a project's `configs/`. Every key is optional; unknown keys are "
    "errors with a did-you-mean. Override any key at launch with `tunelab run PROJECT CONFIG --set "
    "train.epochs=20`. A relative path in a config file (`model.base`, `model.config`, `launch.accelerate_config`) "
    "is the project folder's; given with `--set` it is the current folder's, as anything typed in a shell, and the "
    "run's frozen `config.toml` keeps it absolute (`tiny` and an `owner/name` hub id that names nothing there stay "
    "as typed)."
)


def reference_markdown() -> str:
    return render_reference(RunConfig, "Run config reference", DOCS_INTRO)


if __name__ == "__main__":
    if sys.argv[1:] == ["--docs"]:
        sys.stdout.write(reference_markdown())
    elif len(sys.argv) == 3 and sys.argv[1] == "--default":
        sys.stdout.write(dump_config(default_config(sys.argv[2])))
    else:
        print("usage: python -m engine.config --docs | --default METHOD", file=sys.stderr)
        sys.exit(2)
