"""Every user action in the TUI, named once: its id, default key, description and where it applies.

Widgets and screens take their `BINDINGS` from here (`bindings(scope)`), the help screen lists this
registry, and the command palette offers every action whose scope is on screen. An action's `id` is
also its Textual binding id, so a user's `[keys]` table in the settings file (`app.set_keymap`) rebinds
it everywhere at once.

A scope names the node that owns the action: `app`, a screen (`home`, `project`) or a widget
(`dataset`, `caption`, `configs`). Such a node declares `ACTION_SCOPE = "<scope>"`, which is how the
command palette finds where to run an action.
"""
from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

from engine.launch import FORCE_KILL_AFTER_S


@dataclass(frozen=True)
class Action:
    id: str            # "caption.save": the binding id, the keymap key
    keys: str          # Textual key string; several keys comma-separated
    action: str        # the Textual action run on the scope's node (`save` → `action_save`)
    description: str   # footer text and palette text
    scope: str
    show: bool = True  # shown in the footer
    priority: bool = False
    builtin: bool = False  # provided by a Textual widget itself: listed in help, not bound here
    help: str = ""     # a longer line for the help screen and the palette

    @property
    def label(self) -> str:
        return self.help or self.description


SCOPES: dict[str, str] = {
    "app": "Everywhere",
    "home": "Projects",
    "project": "Project",
    "dataset": "Dataset",
    "caption": "Caption editor",
    "configs": "Configs",
    "list": "Dataset list",
    "bulk": "Bulk captions dialog",
    "conflict": "Caption changed on disk (conflict dialog)",
    "dialog": "Dialogs (new project, new config, errors)",
    "runs": "Runs",
    "picker": "Launch: which config",
    "monitor": "Run monitor",
    "log": "Log view",
    "compare": "Compare (contact sheet)",
    "grid": "Contact sheet cells",
    "zoom": "Zoomed sample",
    "help": "This help",
}

ACTIONS: tuple[Action, ...] = (
    # everywhere
    Action("app.help", "f1,question_mark", "show_help", "Help", "app", help="Show this help: every key, generated from the bindings"),
    Action("app.palette", "ctrl+p", "command_palette", "Commands", "app", show=False, builtin=True,
           help="Command palette: run any action by name"),
    Action("app.quit", "ctrl+q", "quit", "Quit", "app", priority=True, help="Quit tunelab (runs keep going)"),
    # home
    # priority: else the project table's own (hidden) enter hides it from the footer, and a newcomer
    # sees no next step there
    Action("home.open", "enter", "open_project", "Open", "home", priority=True, help="Open the selected project"),
    Action("home.new", "n", "new_project", "New project", "home", help="Create a new project (like `tunelab new`)"),
    Action("home.refresh", "r", "refresh", "Refresh", "home", help="Scan the projects folder again"),
    # project
    Action("project.back", "escape", "back", "Projects", "project", help="Back to the list of projects"),
    Action("project.dataset", "1,f2", "show_tab('dataset')", "Dataset", "project", show=False, help="Show the Dataset tab"),
    Action("project.configs", "2,f3", "show_tab('configs')", "Configs", "project", show=False, help="Show the Configs tab"),
    Action("project.runs", "3,f4", "show_tab('runs')", "Runs", "project", show=False, help="Show the Runs tab"),
    Action("project.compare", "4,f5", "show_tab('compare')", "Compare", "project", show=False, help="Show the Compare tab"),
    # dataset
    # filter and edit are priority bindings (acting only from the list, see DatasetPane.check_action): they
    # move the focus before the next key is routed, so keys typed in the same burst land where they should.
    Action("dataset.filter", "slash", "focus_filter", "Filter", "dataset", priority=True,
           help="Filter the images by text (file, concept, caption)"),
    Action("dataset.flag", "f", "cycle_flag", "Flag", "dataset",
           help="Show only images with a flag (cycles: all, any flag, each flag)"),
    Action("dataset.edit", "e,enter", "edit_caption", "Edit caption", "dataset", priority=True,
           help="Edit the selected image's caption"),
    Action("dataset.bulk", "b", "bulk", "Bulk captions", "dataset",
           help="Bulk caption operation on the shown images (preview, then apply)"),
    Action("dataset.undo", "u", "undo_bulk", "Undo bulk", "dataset",
           help="Undo the last bulk caption operation (also one made by `tunelab caption`)"),
    Action("dataset.list", "escape", "focus_list", "Back to list", "dataset", show=False,
           help="From the filter: back to the list (the filter stays)"),
    Action("dataset.rescan", "r", "rescan", "Rescan", "dataset", show=False,
           help="Scan the project's images and captions again"),
    # the dataset list (navigation)
    Action("list.down", "down", "cursor(1)", "Down", "list", show=False, help="Next image"),
    Action("list.up", "up", "cursor(-1)", "Up", "list", show=False, help="Previous image"),
    Action("list.pagedown", "pagedown", "page(1)", "Page down", "list", show=False, help="A page down"),
    Action("list.pageup", "pageup", "page(-1)", "Page up", "list", show=False, help="A page up"),
    Action("list.first", "home", "jump(0)", "First", "list", show=False, help="First image"),
    Action("list.last", "end", "jump(-1)", "Last", "list", show=False, help="Last image"),
    # caption editor
    Action("caption.save", "ctrl+s", "save", "Save", "caption", priority=True,
           help="Save the caption (atomic write; also saved when moving to another image)"),
    Action("caption.next", "alt+down,ctrl+n", "next_image", "Next", "caption", priority=True,
           help="Save and edit the next image's caption"),
    Action("caption.prev", "alt+up,ctrl+b", "prev_image", "Previous", "caption", priority=True,
           help="Save and edit the previous image's caption"),
    Action("caption.done", "escape", "done", "Back to list", "caption",
           help="Leave the editor (the caption is saved) and go back to the list"),
    Action("caption.undo", "ctrl+z", "undo", "Undo", "caption", builtin=True, help="Undo an edit (the editor's own)"),
    Action("caption.redo", "ctrl+y", "redo", "Redo", "caption", builtin=True, help="Redo an edit (the editor's own)"),
    # bulk captions dialog
    Action("bulk.apply", "ctrl+s", "apply", "Apply", "bulk", priority=True,
           help="Apply the previewed changes (undo later with u)"),
    Action("bulk.cancel", "escape", "cancel", "Cancel", "bulk", help="Close without changing anything"),
    # conflict dialog
    Action("conflict.mine", "ctrl+k", "choose('mine')", "Keep mine", "conflict",
           help="Write your version over the one on disk"),
    Action("conflict.theirs", "ctrl+t", "choose('theirs')", "Take theirs", "conflict",
           help="Drop your edit and take the version on disk"),
    Action("conflict.merged", "ctrl+s", "choose('merged')", "Save merge", "conflict", priority=True,
           help="Write the merge box's text"),
    Action("conflict.later", "escape", "later", "Decide later", "conflict",
           help="Close; your edit stays in the editor, unsaved"),
    # small dialogs
    Action("dialog.submit", "ctrl+s", "submit", "Create", "dialog", priority=True, help="Create (enter in a field does too)"),
    Action("dialog.cancel", "escape", "cancel", "Cancel", "dialog", help="Close without creating anything"),
    # help
    Action("help.close", "escape,q,f1", "close", "Close", "help", help="Close the help"),
    # configs
    Action("configs.edit", "e,enter", "edit_config", "Edit in $EDITOR", "configs",
           help="Open the selected config in $EDITOR (validated again after)"),
    Action("configs.new", "n", "new_config", "New config", "configs",
           help="Create a config from a method's template"),
    Action("configs.validate", "r", "validate", "Validate", "configs", help="Validate every config again"),
)

# Runs, monitor, log view, contact sheet (tui/widgets/runs_pane.py, tui/screens/monitor.py, …).
ACTIONS += (
    Action("runs.monitor", "enter,m", "open_monitor", "Monitor", "runs",
           help="Open the live monitor of the selected run (log, loss, GPU, cost)"),
    Action("runs.launch", "n", "launch", "Launch", "runs",
           help="Launch a config from configs/ (runs `tunelab check` first; errors in a dialog)"),
    Action("runs.stop", "s", "stop", "Stop", "runs",
           help="Stop the selected run gracefully (it saves a checkpoint first)"),
    Action("runs.force_stop", "K", "force_stop", "Force stop", "runs",
           help="Force stop, after asking: SIGTERM to its processes now (the trainer saves a checkpoint, "
                f"without samples, if it can), SIGKILL {FORCE_KILL_AFTER_S:g} s later; settles a lost run"),
    Action("runs.resume", "r", "resume", "Resume", "runs",
           help="Resume the selected run from its newest complete checkpoint (a finished or budget-stopped "
                "run asks for more epochs or hours first)"),
    Action("runs.delete", "delete,D", "delete", "Delete", "runs",
           help="Delete the selected run's folder (asks first; never while it is alive)"),
    # the config picker `n` opens (tui/widgets/runs_pane.py: ConfigPicker); its hint line is made from these
    Action("picker.move", "up,down", "cursor", "Choose", "picker", builtin=True, help="Move to another config"),
    Action("picker.launch", "enter", "select", "Launch", "picker", builtin=True,
           help="Check the chosen config, then launch it"),
    Action("picker.cancel", "escape", "cancel", "Cancel", "picker", help="Close; nothing is launched"),
    Action("monitor.back", "escape,q", "back", "Back", "monitor", help="Back to the runs"),
    Action("monitor.sample", "i", "sample_now", "Sample now", "monitor",
           help="Ask the trainer to render the sample images now"),
    Action("monitor.save", "w", "save_now", "Save now", "monitor",
           help="Ask the trainer to save a checkpoint now"),
    Action("monitor.stop", "x", "stop", "Stop", "monitor",
           help="Stop the run gracefully (it saves a checkpoint first)"),
    Action("monitor.logscale", "l", "toggle_log_scale", "Log scale", "monitor",
           help="Loss plot: toggle a logarithmic y axis"),
    Action("monitor.metric", "p", "cycle_metric", "Plot", "monitor",
           help="Plot: cycle loss, learning rate, images per second"),
    Action("log.follow", "f", "toggle_follow", "Follow", "log",
           help="Log view: keep the newest line in view (scrolling up turns it off)"),
    Action("log.wrap", "W", "toggle_wrap", "Wrap", "log",
           help="Log view: wrap long lines at the edge (off: one row a line, ←/→ scroll sideways)"),
    Action("log.left", "left", "scroll_left", "Left", "log", show=False,
           help="Log view, long lines cut: scroll 8 columns left"),
    Action("log.right", "right", "scroll_right", "Right", "log", show=False,
           help="Log view, long lines cut: scroll 8 columns right"),
    Action("log.half_left", "shift+left", "scroll_half(-1)", "Half screen left", "log", show=False,
           help="Log view, long lines cut: scroll half a screen left"),
    Action("log.half_right", "shift+right", "scroll_half(1)", "Half screen right", "log", show=False,
           help="Log view, long lines cut: scroll half a screen right"),
    # ScrollView's own keys (↑/↓ and pages move by screen rows when wrapped: LogView.scroll_up & co.)
    Action("log.up", "up", "scroll_up", "Up", "log", builtin=True, help="Log view: a row up (stops following)"),
    Action("log.down", "down", "scroll_down", "Down", "log", builtin=True, help="Log view: a row down"),
    Action("log.pageup", "pageup", "page_up", "Page up", "log", builtin=True, help="Log view: a screen up"),
    Action("log.pagedown", "pagedown", "page_down", "Page down", "log", builtin=True,
           help="Log view: a screen down"),
    Action("log.page_left", "ctrl+pageup", "page_left", "Screen left", "log", builtin=True,
           help="Log view, long lines cut: scroll a screen left"),
    Action("log.page_right", "ctrl+pagedown", "page_right", "Screen right", "log", builtin=True,
           help="Log view, long lines cut: scroll a screen right"),
    Action("log.top", "home,g", "scroll_home", "Top", "log", show=False,
           help="Log view: go to the first line (indexes the whole file)"),
    Action("log.end", "end,G", "scroll_end", "End", "log", show=False,
           help="Log view: go to the last line and follow"),
    Action("compare.zoom", "enter", "zoom", "Zoom", "compare",
           help="Show the selected sample full screen, with its prompt, seed, guidance and steps"),
    Action("compare.best", "b", "mark_best", "Mark best", "compare",
           help="Mark the selected column's checkpoint as the run's best (best.json)"),
    Action("compare.export", "e", "export", "Export PNG", "compare",
           help="Write the contact sheet as a PNG (as `tunelab grid` does)"),
    Action("compare.seed", "s", "next_seed", "Seed", "compare",
           help="Show the next seed's images"),
    Action("compare.run", "R", "next_run", "Run", "compare", help="Show the next run's samples"),
    Action("compare.pagedown", "pagedown", "page(1)", "Next page", "compare", show=False,
           help="Next page of prompts"),
    Action("compare.pageup", "pageup", "page(-1)", "Previous page", "compare", show=False,
           help="Previous page of prompts"),
    # moving in the contact sheet (tui/widgets/contact_grid.py)
    Action("grid.up", "up", "move(-1, 0)", "Up", "grid", show=False, help="The prompt above"),
    Action("grid.down", "down", "move(1, 0)", "Down", "grid", show=False, help="The prompt below"),
    Action("grid.left", "left", "move(0, -1)", "Left", "grid", show=False, help="The previous checkpoint"),
    Action("grid.right", "right", "move(0, 1)", "Right", "grid", show=False, help="The next checkpoint"),
    Action("grid.first", "home", "jump(0)", "First column", "grid", show=False,
           help="The first checkpoint (epoch 0, the base)"),
    Action("grid.last", "end", "jump(-1)", "Last column", "grid", show=False, help="The last checkpoint"),
    Action("zoom.close", "escape,enter,q", "close", "Close", "zoom", help="Back to the contact sheet"),
    Action("zoom.prev", "left", "move(-1)", "Previous checkpoint", "zoom",
           help="The same prompt and seed at the previous checkpoint"),
    Action("zoom.next", "right", "move(1)", "Next checkpoint", "zoom",
           help="The same prompt and seed at the next checkpoint"),
    Action("zoom.first", "home", "jump(0)", "First checkpoint", "zoom", show=False,
           help="The same prompt and seed at the first checkpoint (epoch 0, the base)"),
    Action("zoom.last", "end", "jump(-1)", "Last checkpoint", "zoom", show=False,
           help="The same prompt and seed at the last checkpoint"),
    Action("zoom.best", "b", "mark_best", "Mark best", "zoom", help="Mark this checkpoint as the run's best"),
)

BY_ID: dict[str, Action] = {a.id: a for a in ACTIONS}


def in_scope(scope: str) -> list[Action]:
    return [a for a in ACTIONS if a.scope == scope]


def bindings(scope: str) -> list[Binding]:
    """The Textual bindings of a scope, for a class's `BINDINGS`."""
    return [
        Binding(a.keys, a.action, a.description, show=a.show, priority=a.priority, id=a.id)
        for a in in_scope(scope)
        if not a.builtin
    ]


def effective_keys(action: Action, keymap: dict[str, str] | None = None) -> str:
    """The keys an action answers to now: the user's keymap first, else the default."""
    if keymap and action.id in keymap:
        return keymap[action.id]
    return action.keys


def key_display(keys: str) -> str:
    """`alt+down,ctrl+n` → `alt+↓ / ctrl+n` for the help screen."""
    names = {"question_mark": "?", "slash": "/", "down": "↓", "up": "↑", "escape": "esc", "enter": "enter"}
    out = []
    for key in keys.split(","):
        parts = key.strip().split("+")
        out.append("+".join(names.get(p, p) for p in parts))
    return " / ".join(out)


# ---------------------------------------------------------------------------------------------
# The command palette: every registered action whose owner is on screen, run where it is bound.

from functools import partial  # noqa: E402

from textual.command import DiscoveryHit, Hit, Hits, Provider  # noqa: E402
from textual.content import Content  # noqa: E402


def owners(screen, scope: str) -> list:
    """The nodes on `screen` that own a scope's actions (the app for `app`)."""
    if scope == "app":
        return [screen.app]
    found = [screen] if getattr(screen, "ACTION_SCOPE", None) == scope else []
    found.extend(n for n in screen.query("*") if getattr(n, "ACTION_SCOPE", None) == scope)
    return found


class ActionsProvider(Provider):
    """Offers each registered action that can run now, labelled with its keys."""

    def _commands(self) -> list[tuple[str, str, object]]:
        keymap = getattr(self.app, "_keymap", {}) or {}
        out = []
        for a in ACTIONS:
            if a.builtin or a.scope in ("list", "grid", "help"):
                continue
            for node in owners(self.screen, a.scope)[:1]:
                name = a.action.split("(", 1)[0]
                if node.check_action(name, ()) is False:
                    continue
                label = f"{SCOPES[a.scope]}: {a.description}  [{key_display(effective_keys(a, keymap))}]"
                out.append((label, a.label, partial(self.app.run_action, a.action, node)))
        return out

    async def discover(self) -> Hits:
        for label, help_text, command in self._commands():
            yield DiscoveryHit(Content(label), command, text=label, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for label, help_text, command in self._commands():
            score = max(matcher.match(label), matcher.match(help_text) * 0.8)
            if score > 0:
                yield Hit(score, highlight(matcher, label), command, text=label, help=help_text)


def highlight(matcher, label: str) -> Content:
    """The label with the matched letters marked, as plain text: a key such as `[/]` is not markup.

    (Textual's `Matcher.highlight` parses its argument as markup, and a palette entry
    `Dataset: Filter  [/]` then raised MarkupError and took the app down.)
    """
    content = Content(label)
    _score, offsets = matcher.fuzzy_search.match(matcher.query, label)
    for offset in offsets:
        if not label[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content
