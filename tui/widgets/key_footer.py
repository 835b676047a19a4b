"""The footer of every full screen: Textual's Footer, compact, help first, never a key cut in half.

At 80 columns Textual's Footer ran out of room: the last key showed as `es…` and the app's own
keys (F1 help, quit), which come last, were not there at all. Here F1 help goes first, every key is
as narrow as Footer's compact style makes it, and the keys that do not fit the width are left out
whole from the end (the focused widget's keys come first, then its screen's, then the app's); F1
lists them all.
"""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

HELP_ACTION = "show_help"  # the app's F1 binding (tui/actions.py: app.help)


class KeyFooter(Footer):
    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("compact", True)
        super().__init__(**kwargs)

    def compose(self):
        keys = list(super().compose())  # tunelab's bindings have no groups: a flat list of FooterKey
        first = [k for k in keys if isinstance(k, FooterKey) and _is_help(k)]
        yield from first + [k for k in keys if not any(k is f for f in first)]

    async def recompose(self) -> None:
        await super().recompose()
        self.call_after_refresh(self._fit)

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """Show the keys, in order, while they fit beside the command palette's key; hide the rest."""
        keys = [k for k in self.query_children(FooterKey) if not k.has_class("-command-palette")]
        palette = [k for k in self.query_children(FooterKey) if k.has_class("-command-palette")]
        room = self.size.width - sum(_cells(k) + 1 for k in palette)  # + its border
        fits = True
        for key in keys:
            fits = fits and _cells(key) <= room
            if fits:
                room -= _cells(key)
            key.display = fits

    def visible_keys(self) -> list[str]:
        """The keys shown now, as displayed (`f1`, `^s`, `esc`): for tests and tools."""
        return [k.key_display for k in self.query_children(FooterKey)
                if k.display and not k.has_class("-command-palette")]


def _is_help(key: FooterKey) -> bool:
    return key.action == HELP_ACTION


def _cells(key: FooterKey) -> int:
    rendered = key.render()
    width = rendered.cell_len if isinstance(rendered, Text) else len(str(rendered))
    margin = key.styles.margin
    return width + margin.left + margin.right
