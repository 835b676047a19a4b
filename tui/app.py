"""The Textual app and its factory, `make_app`, shared by the `tunelab` command and the tests.

The app is an event router: screens and widgets do their I/O in workers that post messages, and
only message handlers change what is shown. A worker that raises is shown in a modal, never as a
traceback (`tui.screens.error.ReportsWorkerErrors`, mixed into every owner of workers). Nondeterminism can be switched off for tests and snapshots:
`watch=False` (no file watcher), `animations=False` (no cursor blink, no animated scrolling), and an
explicit image mode (`halfblock` or `none`: no terminal probing).

User settings (optional) are read from `$TUNELAB_SETTINGS`, else `$XDG_CONFIG_HOME/tunelab/settings.toml`
(`~/.config/...`): `images = "halfblock"` and a `[keys]` table mapping action ids (see the help
screen, F1) to keys, e.g. `"caption.next" = "ctrl+j"`.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from textual.app import App

from tui import actions
from tui.widgets.image_preview import IMAGE_MODES, prepare_image_mode


def settings_path() -> Path:
    explicit = os.environ.get("TUNELAB_SETTINGS")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "tunelab" / "settings.toml"


def load_settings(path: Path | None = None) -> tuple[dict[str, Any], str]:
    """(settings, problem): a missing file is no problem; a broken one is reported, not fatal."""
    path = path or settings_path()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}, ""
    except (OSError, tomllib.TOMLDecodeError) as e:
        return {}, f"{path}: ignored: {e}"
    problems = []
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        problems.append("[keys] must be a table")
        data["keys"] = {}
    else:
        for name, value in list(keys.items()):
            if name not in actions.BY_ID or actions.BY_ID[name].builtin:
                problems.append(f"keys.{name}: unknown action")
                del keys[name]
            elif not isinstance(value, str) or not value.strip():
                problems.append(f"keys.{name}: must be a key string such as \"ctrl+j\"")
                del keys[name]
    images = data.get("images")
    if images is not None and images not in IMAGE_MODES:
        problems.append(f"images = {images!r}: accepted: {', '.join(IMAGE_MODES)}")
        del data["images"]
    return data, (f"{path}: " + "; ".join(problems)) if problems else ""


class TunelabApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "tunelab"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {actions.ActionsProvider}
    BINDINGS = actions.bindings("app")

    def __init__(self, projects_dir: str | os.PathLike, *, images: str = "auto", watch: bool = True,
                 animations: bool = True, settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.projects_dir = Path(projects_dir)
        self.image_mode = prepare_image_mode(images)
        self.watch_files = watch
        self.animations = animations
        self.settings = settings or {}
        if not animations:
            self.animation_level = "none"
        keys = self.settings.get("keys") or {}
        if keys:
            self.set_keymap(dict(keys))

    def on_mount(self) -> None:
        from tui.screens.home import HomeScreen
        from tui.widgets import image_preview

        self.push_screen(HomeScreen(self.projects_dir))
        probe = image_preview.LAST_PROBE
        if probe is not None and not probe.answered and probe.reason:
            self.notify(probe.reason, severity="warning", timeout=10)

    def open_project(self, path: str | os.PathLike, tab: str = "dataset") -> None:
        from tui.screens.project import ProjectScreen

        self.push_screen(ProjectScreen(Path(path), tab))

    def action_show_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_help":  # not offered (footer, palette) on the help screen itself
            from tui.screens.help import HelpScreen

            return not isinstance(self.screen, HelpScreen)
        return True


def make_app(projects_dir: str | os.PathLike, *, images: str = "auto", watch: bool = True,
             animations: bool = True, settings: dict[str, Any] | None = None) -> TunelabApp:
    """The app, as the CLI and the tests build it. `images="auto"` asks the terminal (call before `run`)."""
    return TunelabApp(projects_dir, images=images, watch=watch, animations=animations, settings=settings)
