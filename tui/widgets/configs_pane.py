"""The Configs tab: the project's run configs, each validated, with its problems shown at the key.

The list marks each config valid or not — valid means `tunelab run` would launch it: the schema, then
`engine.launch.prelaunch_check` (the base model resolves, a textual-inversion placeholder is new to its
tokenizer, an accelerate config file exists). The view shows the file with line numbers and every
problem printed under the line it points at (`configs/lora.toml:14: train.learning_rate = -1: must be
> 0`, the same words as `tunelab check`), and `tunelab check`'s warnings about the config (what launches
but is likely a mistake: `engine.launch.prelaunch_warnings`, a placeholder no sample prompt says) as ⚠. `e` opens the config in $VISUAL/$EDITOR with the app
suspended; `n` writes a new config from a method's defaults (`engine.config.default_config`).
Validation runs in a worker: at start, whenever a config file changes, when the tab is shown, and every
`REVALIDATE_S` seconds while it is on screen. The last two catch causes outside configs/ going away
(the tiny model built, a base model copied into the HF cache, an accelerate config file written); the
view is redrawn only when a result differs, so the scroll position and selection stay put.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from engine import atomic
from engine.config import dump_config, default_config, load_run_config
from engine.launch import prelaunch_check, prelaunch_warnings
from engine.schema import ConfigError, Problem
from tui import actions
from tui.screens.error import ReportsWorkerErrors


@dataclass
class ConfigStatus:
    path: Path
    rel: str
    text: str = ""
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # it launches, but `tunelab check` warns
    method: str = ""
    description: str = ""
    base: str = ""  # model.base, once the config loads

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_config(path: Path, project_dir: Path) -> ConfigStatus:
    """Load and validate one config; problems name the file relative to the project."""
    try:
        rel = path.relative_to(project_dir).as_posix()
    except ValueError:
        rel = str(path)
    status = ConfigStatus(path, rel)
    try:
        status.text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        status.problems = [Problem(rel, None, "", f"cannot read: {e.strerror or e}")]
        return status
    try:
        cfg = load_run_config(path)
        status.method = cfg.method
        status.description = cfg.description
        status.base = cfg.model.base
    except ConfigError as e:
        status.problems = [dataclasses.replace(p, file=rel if p.file == str(path) else p.file) for p in e.problems]
        return status
    # What `tunelab run` refuses beyond the schema (base model, placeholder, accelerate config): the
    # same function, so a ✓ here means the config launches. It reads files: callers run it in a worker.
    status.problems = prelaunch_check(cfg, project_dir, rel, status.text)
    status.warnings = prelaunch_warnings(cfg, rel, status.text) + _method_warnings(cfg, project_dir, rel, status.text)
    return status


def _method_warnings(cfg, project_dir: Path, rel: str, text: str) -> list[Problem]:
    """`tunelab check`'s warnings about how the method uses the project (a placeholder no sample prompt
    says), at `sample.prompts` when the config lists them, else with no line (they are the goals)."""
    from engine.captionuse import caption_use
    from engine.project import load_project_file
    from engine.schema import key_line

    try:
        goals = load_project_file(project_dir).goals.as_dict()
    except (ConfigError, OSError):
        goals = {}
    line = key_line(text, "sample.prompts") if cfg.sample.prompts else None
    return [Problem(rel, line, "", message) for message in caption_use(cfg, [], goals).warnings]


def list_configs(project_dir: Path) -> list[Path]:
    try:
        return sorted(p for p in (project_dir / "configs").glob("*.toml") if p.is_file() and not p.name.startswith("."))
    except OSError:
        return []


def render_config(status: ConfigStatus) -> Text:
    """The file with line numbers, each problem (✗, red) and warning (⚠, yellow) under its line; those
    with no line first."""
    out = Text()
    by_line: dict[int, list[Problem]] = {}
    warned: dict[int, list[Problem]] = {}
    for p in status.problems:
        if p.line:
            by_line.setdefault(p.line, []).append(p)
        else:
            out.append(f"✗ {p}\n", style="bold red")
    for p in status.warnings:
        if p.line:
            warned.setdefault(p.line, []).append(p)
        else:
            out.append(f"⚠ {p}\n", style="yellow")
    if status.ok:
        desc = f" — {status.description}" if status.description else ""
        out.append(f"✓ {status.rel}: valid ({status.method}){desc}\n", style="green")
    else:
        out.append(f"✗ {status.rel}: {len(status.problems)} problem(s)\n", style="bold red")
        for p in status.problems:  # all of them at a glance; each is also shown under its line below
            if p.line:
                out.append(f"  line {p.line}: ", style="red")
                sep = " " if p.message.startswith("= ") else ": "
                out.append(f"{p.key + sep if p.key else ''}{p.message}\n", style="red")
    if status.warnings:
        out.append(f"⚠ {len(status.warnings)} warning(s): it launches, but this is likely a mistake\n", style="yellow")
        for p in status.warnings:
            if p.line:
                sep = " " if p.message.startswith("= ") else ": "
                out.append(f"  line {p.line}: {p.key + sep if p.key else ''}{p.message}\n", style="yellow")
    out.append("\n")
    lines = status.text.splitlines()
    width = len(str(max(1, len(lines))))
    for n, line in enumerate(lines, start=1):
        bad = n in by_line
        out.append(f"{n:>{width}} │ ", style="red" if bad else "yellow" if n in warned else "dim")
        out.append(line + "\n", style="" if not bad else "bold")
        for p in by_line.get(n, []):
            out.append(" " * width + " └ ", style="red")
            out.append(f"{p}\n", style="red")
        for p in warned.get(n, []):
            out.append(" " * width + " └ ⚠ ", style="yellow")
            out.append(f"{p}\n", style="yellow")
    beyond = [p for ln, ps in by_line.items() if ln > len(lines) for p in ps]
    for p in beyond:
        out.append(f"✗ {p}\n", style="red")
    for p in (p for ln, ps in warned.items() if ln > len(lines) for p in ps):
        out.append(f"⚠ {p}\n", style="yellow")
    return out


def editor_command(path: Path) -> list[str] | None:
    """$VISUAL or $EDITOR (split like a shell would, never run through one), else nano or vi."""
    for var in ("VISUAL", "EDITOR"):
        value = os.environ.get(var, "").strip()
        if value:
            return [*shlex.split(value), str(path)]
    for name in ("nano", "vi"):
        found = shutil.which(name)
        if found:
            return [found, str(path)]
    return None


class ConfigsPane(ReportsWorkerErrors, Vertical):
    ACTION_SCOPE = "configs"
    BINDINGS = actions.bindings("configs")

    DEFAULT_CSS = """
    ConfigsPane #configs-body { height: 1fr; }
    ConfigsPane #configs-list { width: 32; height: 1fr; }
    ConfigsPane #config-scroll { width: 1fr; height: 1fr; padding: 0 1; }
    ConfigsPane #configs-hint { height: 1; color: $text-muted; }
    """

    REVALIDATE_S = 3.0  # validating every config takes milliseconds; a ✗ whose cause is gone clears soon

    class Validated(Message):
        def __init__(self, statuses: list[ConfigStatus]) -> None:
            super().__init__()
            self.statuses = statuses

    def __init__(self, project_dir: str | os.PathLike, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.project_dir = Path(project_dir)
        self.statuses: list[ConfigStatus] = []
        self._select_after: str | None = None
        self._validated_once = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="configs-body"):
            yield OptionList(id="configs-list")
            with VerticalScroll(id="config-scroll"):
                yield Static("validating…", id="config-view")
        yield Static("e edit in $EDITOR · n new from a method's template · r validate again", id="configs-hint")

    def on_mount(self) -> None:
        self.action_validate()
        self.set_interval(self.REVALIDATE_S, self._tick)

    # --- validation --------------------------------------------------------------------------
    def action_validate(self) -> None:
        self._validate_worker()

    def shown(self) -> None:
        """The tab was just shown: what a config needs may have appeared since it was last checked."""
        if not self._validating():
            self.action_validate()

    def _tick(self) -> None:
        # Only while the user can see the tab (not behind another tab or screen), and never a second
        # check while one is still running on a slow disk.
        if self.screen.is_current and self.is_on_screen and not self._validating():
            self.action_validate()

    def _validating(self) -> bool:
        return any(w.node is self and w.group == "configs" and not w.is_finished for w in self.workers)

    @work(thread=True, exclusive=True, group="configs", exit_on_error=False)
    def _validate_worker(self) -> None:
        statuses = [validate_config(p, self.project_dir) for p in list_configs(self.project_dir)]
        self.post_message(self.Validated(statuses))

    @on(Validated)
    def _validated(self, event: Validated) -> None:
        event.stop()
        if self._validated_once and self._select_after is None and event.statuses == self.statuses:
            return  # nothing changed: keep the list, the view and its scroll position as they are
        self._validated_once = True
        listing = self.query_one("#configs-list", OptionList)
        selected = self.selected
        self.statuses = event.statuses
        listing.clear_options()
        for s in self.statuses:
            mark = Text("✓ ", style="green") if s.ok else Text("✗ ", style="bold red")
            label = mark + Text(s.path.name)
            if not s.ok:
                label += Text(f" ({len(s.problems)})", style="red")
            if s.warnings:
                label += Text(f" ⚠{len(s.warnings)}", style="yellow")
            listing.add_option(Option(label, id=s.path.name))
        if not self.statuses:
            self.query_one("#config-view", Static).update(
                Text(f"No run configs in {self.project_dir.name}/configs/. Press n to create one from a template."))
            return
        names = [s.path.name for s in self.statuses]
        want = self._select_after or (selected.path.name if selected is not None else None)
        self._select_after = None
        index = names.index(want) if want in names else 0
        listing.highlighted = index
        self._show(index)

    @property
    def selected(self) -> ConfigStatus | None:
        index = self.query_one("#configs-list", OptionList).highlighted
        if index is None or not (0 <= index < len(self.statuses)):
            return None
        return self.statuses[index]

    @on(OptionList.OptionHighlighted, "#configs-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show(event.option_index)

    @on(OptionList.OptionSelected, "#configs-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.action_edit_config()

    def _show(self, index: int) -> None:
        if 0 <= index < len(self.statuses):
            self.query_one("#config-view", Static).update(render_config(self.statuses[index]))

    def files_changed(self, paths: set[Path]) -> None:
        configs = (self.project_dir / "configs").resolve()
        if any(p.parent == configs for p in paths):
            self.action_validate()

    # --- edit and create ---------------------------------------------------------------------
    def action_edit_config(self) -> None:
        status = self.selected
        if status is None:
            self.app.bell()
            return
        command = editor_command(status.path)
        if command is None:
            self.app.notify("Set $EDITOR (or $VISUAL) to edit configs from tunelab", severity="warning")
            return
        from textual.app import SuspendNotSupported

        try:
            with self.app.suspend():
                subprocess.call(command)
        except SuspendNotSupported:
            self.app.notify("This terminal cannot suspend the app to run an editor", severity="warning")
        except OSError as e:
            self.app.notify(f"could not start {command[0]}: {e.strerror or e}", severity="error")
        self.action_validate()

    def action_new_config(self) -> None:
        from tui.screens.new_config import NewConfigScreen

        existing = {p.stem for p in list_configs(self.project_dir)}
        self.app.push_screen(NewConfigScreen(existing), self._create)

    def _create(self, result: tuple[str, str, dict[str, str]] | None) -> None:
        if result is None:
            return
        method, name, settings = result
        path = self.project_dir / "configs" / f"{name}.toml"
        if path.exists():
            self.app.notify(f"{path.name} exists already; nothing written", severity="error")
            return
        header = (f"# A {method} run config: `tunelab run {self.project_dir.name} {name}`. Reference: docs/config.md.\n"
                  "# Every key is optional; these are the defaults for the method (other methods' sections left out).\n"
                  "# Delete what you do not change.\n\n")
        cfg = default_config(method)
        # The base the project already trains on (its valid configs'), not the schema's default: a new
        # config in a project of the tiny model, or of a local SD folder, should launch as it is.
        bases = [s.base for s in self.statuses if s.ok and s.base]
        if bases:
            cfg.model.base = max(set(bases), key=bases.count)
        for key, value in settings.items():
            section, field_name = key.split(".", 1)
            setattr(getattr(cfg, section), field_name, value)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, header + dump_config(cfg, used_sections_only=True))
        self.app.notify(f"created configs/{path.name}", timeout=3)
        self._select_after = path.name
        self.action_validate()
