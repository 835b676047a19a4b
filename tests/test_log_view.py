"""The live log view: a newline-offset index built backwards and lazily, read on demand, that follows."""
from __future__ import annotations

import asyncio
import functools
import os
from array import array

import pytest
from textual.app import App, ComposeResult

from tui.widgets import log_view as lv
from tui.widgets.log_view import LineIndex, LogView, newline_offsets, overprint


def index_of(data: bytes, chunk: int) -> LineIndex:
    """Build an index the way the watcher does: backwards from the end in chunks."""
    idx = LineIndex(len(data))
    low = len(data)
    while low > 0:
        start = max(0, low - chunk)
        found = newline_offsets(data[start:low], start)
        found.reverse()
        idx.add_back(found, start)
        low = start
    return idx


def lines_of(data: bytes, idx: LineIndex) -> list[bytes]:
    return [data[slice(*idx.span(i))] for i in range(idx.line_count)]


@pytest.mark.parametrize("data", [b"", b"a", b"a\n", b"a\nb", b"a\nb\n", b"\n\n", b"one\n\ntwo\nthree"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_index_built_backwards_gives_the_same_lines_as_splitlines(data, chunk):
    idx = index_of(data, chunk)
    expected = data.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert lines_of(data, idx) == expected


def test_a_partial_index_hides_the_unfinished_first_line_and_shows_the_partial_last_one():
    data = b"first line\nsecond\nthird\npartial"
    idx = LineIndex(len(data))
    low = len(data) - 15  # inside "second"
    found = newline_offsets(data[low:], low)
    found.reverse()
    idx.add_back(found, low)
    assert not idx.complete
    assert lines_of(data, idx) == [b"third", b"partial"]
    # Older data arrives: lines are added above, the count says how many.
    rest = newline_offsets(data[:low], 0)
    rest.reverse()
    assert idx.add_back(rest, 0) == 2
    assert lines_of(data, idx) == [b"first line", b"second", b"third", b"partial"]


def test_appended_data_completes_the_partial_last_line():
    data = b"a\nb"
    idx = index_of(data, 100)
    more = b"c\nd\n"
    idx.add_forward(newline_offsets(more, len(data)), len(data) + len(more))
    assert lines_of(data + more, idx) == [b"a", b"bc", b"d"]


def test_offsets_are_eight_bytes_a_line():
    data = b"x\n" * 1000
    idx = index_of(data, 256)
    assert idx.line_count == 1000
    assert idx.nbytes == 8000
    assert isinstance(newline_offsets(data, 0), array) and newline_offsets(data, 0).typecode == "Q"


def test_carriage_returns_overprint_like_a_terminal():
    assert overprint("10%\r20%\r100%") == "100%"
    assert overprint("line\r") == "line"
    assert overprint("abcdef\rxy") == "xycdef"
    assert overprint("plain") == "plain"


def sync(fn):
    """Run an async test body on a fresh event loop (no async pytest plugin needed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


class LogApp(App):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        yield LogView(self.path, poll=0.05, id="log")


async def wait_for(pilot, cond, timeout=5.0):
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not met in time")


def visible(view: LogView) -> list[str]:
    return [view.render_line(y).text.rstrip() for y in range(view.scrollable_content_region.height)]


@sync
async def test_log_view_shows_the_tail_follows_appends_and_survives_truncation(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)) + b"progress 10%\rprogress 50%")
    app = LogApp(path)
    async with app.run_test(size=(60, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 1001)
        await pilot.pause()
        assert view.follow
        assert visible(view)[-1] == "progress 50%"
        assert visible(view)[-2] == "line 999"
        with open(path, "ab") as f:
            f.write(b"\rprogress 100%\nline 1000\n")
        await wait_for(pilot, lambda: view.index.line_count == 1002)
        await pilot.pause()
        assert visible(view)[-2:] == ["progress 100%", "line 1000"]

        # Scrolling up stops following; appended lines then do not move the view.
        await pilot.press("pageup")
        assert not view.follow
        top = view.scroll_y
        with open(path, "ab") as f:
            f.write(b"line 1001\n")
        await wait_for(pilot, lambda: view.index.line_count == 1003)
        assert view.scroll_y == top
        await pilot.press("f")
        assert view.follow and view.scroll_y == view.max_scroll_y

        # Truncated (size shrank): scanned afresh.
        path.write_bytes(b"fresh start\n")
        await wait_for(pilot, lambda: view.index.line_count == 1 and view.index.end == 12)
        await pilot.pause()
        assert visible(view)[0] == "fresh start"


@sync
async def test_log_view_follows_a_rotated_file_and_waits_for_a_missing_one(tmp_path):
    path = tmp_path / "train.log"
    app = LogApp(path)
    async with app.run_test(size=(60, 8)) as pilot:
        view = app.query_one(LogView)
        await pilot.pause(0.1)
        assert view.index.line_count == 0
        assert "waiting" in str(view.border_subtitle)
        path.write_bytes(b"old 1\nold 2\n")
        await wait_for(pilot, lambda: view.index.line_count == 2)
        os.rename(path, tmp_path / "train.log.1")
        path.write_bytes(b"new\n")
        await wait_for(pilot, lambda: view.index.line_count == 1 and view.index.end == 4)
        await pilot.pause()
        assert visible(view)[0] == "new"


@sync
async def test_a_big_log_indexes_only_its_tail_until_the_user_goes_to_the_top(tmp_path, monkeypatch):
    monkeypatch.setattr(lv, "AUTO_INDEX_BYTES", 64 * 1024)
    monkeypatch.setattr(lv, "BACK_CHUNK", 64 * 1024)
    path = tmp_path / "train.log"
    line = b"x" * 99 + b"\n"
    path.write_bytes(line * 20000)  # 2 MB
    app = LogApp(path)
    async with app.run_test(size=(60, 10)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count > 0)
        await pilot.pause(0.3)
        assert not view.index.complete
        assert view.index.line_count < 2000  # bounded: ~128 KB of 2 MB indexed
        await pilot.press("home")
        await wait_for(pilot, lambda: view.index.complete)
        assert view.index.line_count == 20000
        assert not view.follow


@sync
async def test_a_following_view_keeps_the_last_line_in_sight_when_it_gets_shorter(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    app = LogApp(path)
    async with app.run_test(size=(60, 30)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 100)
        await pilot.pause()
        assert visible(view)[-1] == "line 99"
        view.styles.height = 10  # e.g. the monitor's numbers above it took another line
        await pilot.pause()
        await pilot.pause()
        assert view.follow and visible(view)[-1] == "line 99"


LONG_WARNING = ("UserWarning: the attention mask and the pad token id were not set; as a consequence you may "
                "observe unexpected behaviour, so pass your input's attention_mask to obtain reliable results "
                "END_OF_WARNING")


@sync
async def test_a_following_view_shows_its_last_line_above_the_sideways_scrollbar_a_long_line_brings(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(b"".join(b"step %d\n" % i for i in range(50)) + LONG_WARNING.encode() + b"\nlast line\n")
    app = LogApp(path)
    async with app.run_test(size=(60, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 52 and view.show_horizontal_scrollbar)
        await pilot.pause()
        await pilot.pause()
        assert view.follow and visible(view)[-1] == "last line"


@sync
async def test_W_wraps_long_lines_so_they_can_be_read_whole_and_unwraps_them_again(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(b"".join(b"step %d\n" % i for i in range(200)) + LONG_WARNING.encode() + b"\nlast line\n")
    app = LogApp(path)
    async with app.run_test(size=(50, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 202)
        await pilot.pause()
        # One row a line: the warning is cut at the edge, and the subtitle says how to read it.
        assert not any("END_OF_WARNING" in row for row in visible(view))
        assert "W wraps" in str(view.border_subtitle)
        await pilot.press("W")
        await pilot.pause()
        rows = visible(view)
        assert view.wrap and view.follow and rows[-1] == "last line"  # the end stays in view
        start = next(i for i, row in enumerate(rows) if row.startswith("UserWarning"))
        joined = " ".join(rows[start:-1])
        assert joined == LONG_WARNING  # every word, at spaces, nothing cut
        assert all(len(row) <= view.scrollable_content_region.width for row in rows)
        assert view.max_scroll_x == 0 and "wrapped" in str(view.border_subtitle)
        # Appended lines still follow; scrolling up shows earlier lines whole.
        with open(path, "ab") as f:
            f.write(b"newer\n")
        await wait_for(pilot, lambda: visible(view)[-1] == "newer")
        await pilot.press("pageup")
        assert not view.follow
        top = view.top_line
        assert visible(view)[0] == f"step {top}"
        await pilot.press("W")  # back to one row a line: the same line stays on top
        await pilot.pause()
        assert not view.wrap and int(view.scroll_y) == top and visible(view)[0] == f"step {top}"


@sync
async def test_wrapped_lines_of_a_short_log_are_all_reachable(tmp_path):
    # Fewer lines than rows, but wrapped they need more: the scroll range must reach the first row.
    path = tmp_path / "train.log"
    path.write_bytes(b"first line\n" + (LONG_WARNING + " " + LONG_WARNING).encode() + b"\nlast\n")
    app = LogApp(path)
    async with app.run_test(size=(40, 10)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 3)
        await pilot.press("W")
        await pilot.pause()
        assert visible(view)[-1] == "last" and "first line" not in visible(view)
        await pilot.press("home")
        await pilot.pause()
        assert visible(view)[0] == "first line"


@sync
async def test_home_on_a_partly_indexed_big_log_goes_to_line_1_and_stays_there(tmp_path, monkeypatch):
    """`home` before the older part of a big log is indexed: the lines indexed meanwhile are above the
    view, and the view used to keep the line it had reached (the first indexed one), far from line 1.
    Now it stays on line 1, wrapped or not, while the rest is indexed."""
    monkeypatch.setattr(lv, "AUTO_INDEX_BYTES", 64 * 1024)
    monkeypatch.setattr(lv, "BACK_CHUNK", 64 * 1024)
    path = tmp_path / "train.log"
    path.write_bytes(b"".join(b"line %05d " % i + b"x" * 88 + b"\n" for i in range(20000)))  # 2 MB
    for wrap in (False, True):
        app = LogApp(path)
        async with app.run_test(size=(60, 10)) as pilot:
            view = app.query_one(LogView)
            await wait_for(pilot, lambda: view.index.line_count > 0)
            if wrap:
                await pilot.press("W")
            await pilot.pause(0.3)
            assert not view.index.complete  # only the tail: line 1 is not indexed yet
            await pilot.press("home")
            await wait_for(pilot, lambda: view.index.complete)
            await pilot.pause()
            assert visible(view)[0].startswith("line 00000"), (wrap, visible(view)[:2])
            assert view.top_line == 0 and not view.follow
            # A move from the top is an ordinary move: a row down (wrapped, line 1's second row).
            await pilot.press("down")
            if wrap:
                assert view.top_line == 0 and visible(view)[0].startswith("xxx")
            else:
                assert visible(view)[0].startswith("line 00001")


@sync
async def test_wrapping_a_big_log_still_reads_only_its_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(lv, "AUTO_INDEX_BYTES", 64 * 1024)
    monkeypatch.setattr(lv, "BACK_CHUNK", 64 * 1024)
    path = tmp_path / "train.log"
    path.write_bytes((b"y" * 150 + b"\n") * 20000)  # 3 MB of lines longer than the view
    reads = []
    real = lv.os.pread
    monkeypatch.setattr(lv.os, "pread", lambda fd, n, off: reads.append(n) or real(fd, n, off))
    app = LogApp(path)
    async with app.run_test(size=(60, 10)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count > 0)
        await pilot.press("W")
        await pilot.pause(0.3)
        assert visible(view)[-1] == "y" * (150 - 2 * view.scrollable_content_region.width)
        assert not view.index.complete and view.index.line_count < 2000  # still only the tail indexed
        await pilot.press(*["up"] * 10, "pageup", "pageup")  # moving by rows wraps only the lines passed
        await pilot.pause(0.2)
        assert not view.follow and set(visible(view)[0]) == {"y"}
        assert sum(reads) < 400 * 1024  # bytes read: the tail scan and the lines shown, not the file


# --- wrapped: the position moves by screen rows ------------------------------------------------------

def numbered_warning(k: int) -> str:
    """A long line whose every row can be told apart: w<k>_00 w<k>_01 …"""
    return " ".join(f"w{k}_{j:02d}" for j in range(40))  # 239 cells: 7 rows of 6 words in 36 columns


WRAP_LOG = (b"".join(b"step %d\n" % i for i in range(12)) + numbered_warning(1).encode() + b"\n"
            + b"".join(b"mid %d\n" % i for i in range(15)) + numbered_warning(2).encode() + b"\nlast line\n")


async def all_rows(pilot, view) -> list[str]:
    """Every screen row of the wrapped file, read as a user would: `home`, then `down` until following
    again; asserting on the way that each press moved the text up by exactly one row."""
    await pilot.press("home")
    await pilot.pause()
    rows = visible(view)
    ys = [view.scroll_y / view.max_scroll_y]  # where the scrollbar's thumb is, 0 to 1
    while not view.follow:
        before = visible(view)
        await pilot.press("down")
        now = visible(view)
        assert now[:-1] == before[1:], (before, now)  # one row, not one line
        rows.append(now[-1])
        ys.append(view.scroll_y / view.max_scroll_y)
        assert len(rows) < 500
    # The thumb goes down with the text, never back, and ends at the bottom.
    assert all(b > a for a, b in zip(ys, ys[1:])) and ys[-1] == 1
    return rows


@sync
async def test_wrapped_down_moves_one_screen_row_even_across_a_line_that_wraps_to_many(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(WRAP_LOG)
    app = LogApp(path)
    async with app.run_test(size=(40, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 30)
        await pilot.press("W")
        await pilot.pause()
        rows = await all_rows(pilot, view)
        # Every row of the file, once, in order: the long lines' rows one by one.
        assert rows[:12] == [f"step {i}" for i in range(12)]
        assert rows[12] == "w1_00 w1_01 w1_02 w1_03 w1_04 w1_05"
        assert " ".join(rows[12:19]) == numbered_warning(1) and rows[19] == "mid 0"
        assert " ".join(rows[-8:-1]) == numbered_warning(2) and rows[-1] == "last line"
        assert len(rows) == 12 + 7 + 15 + 7 + 1


@sync
async def test_wrapped_up_from_the_end_moves_one_row_pages_a_screen_and_end_pins_the_last_row(tmp_path):
    from textual import events

    path = tmp_path / "train.log"
    path.write_bytes(WRAP_LOG)
    app = LogApp(path)
    async with app.run_test(size=(40, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 30)
        await pilot.press("W")
        await pilot.pause()
        height = view.scrollable_content_region.height
        rows = await all_rows(pilot, view)
        assert view.follow and visible(view) == rows[-height:]

        await pilot.press("up")  # the newest row goes below the edge: one row, not the whole "last line"…
        await pilot.pause()
        assert not view.follow and visible(view) == rows[-height - 1:-1]
        await pilot.press("up")  # …and then one row of the long warning above it
        await pilot.pause()
        assert visible(view) == rows[-height - 2:-2]
        # The wheel: as many rows as the app's scroll sensitivity (2, as for unwrapped lines).
        view.post_message(events.MouseScrollUp(view, 1, 1, 0, -1, 0, False, False, False))
        await pilot.pause()
        assert visible(view) == rows[-height - 4:-4]
        view.post_message(events.MouseScrollDown(view, 1, 1, 0, 1, 0, False, False, False))
        await pilot.pause()
        assert visible(view) == rows[-height - 2:-2]
        await pilot.press("pageup")  # a screen
        await pilot.pause()
        assert visible(view) == rows[-2 * height - 2:-height - 2]
        await pilot.press("pagedown")
        await pilot.pause()
        assert visible(view) == rows[-height - 2:-2]

        await pilot.press("end")  # following again, the last row at the bottom
        await pilot.pause()
        assert view.follow and visible(view) == rows[-height:]
        with open(path, "ab") as f:
            f.write(numbered_warning(3).encode() + b"\nnewest\n")
        await wait_for(pilot, lambda: visible(view)[-1] == "newest")
        assert " ".join(visible(view)[-8:-1]) == numbered_warning(3)
        await pilot.press("home")
        await pilot.pause()
        assert visible(view)[0] == "step 0" and not view.follow


@sync
async def test_toggling_wrap_keeps_the_top_line_even_when_only_its_last_rows_were_showing(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(WRAP_LOG)
    app = LogApp(path)
    async with app.run_test(size=(40, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 30)
        await pilot.press("W", "home", *["down"] * 15)  # 12 steps, then 3 rows into the first warning
        await pilot.pause()
        assert visible(view)[0] == "w1_18 w1_19 w1_20 w1_21 w1_22 w1_23"
        await pilot.press("W")  # one row a line: that warning is the top line
        await pilot.pause()
        assert not view.wrap and visible(view)[0].startswith("w1_00 w1_01") and visible(view)[1] == "mid 0"
        await pilot.press("W")  # and wrapped again, from its first row
        await pilot.pause()
        assert view.wrap and visible(view)[0] == "w1_00 w1_01 w1_02 w1_03 w1_04 w1_05"
        assert not view.follow


@sync
async def test_a_dragged_scrollbar_puts_the_wrapped_view_where_it_points(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(b"".join((f"{i:04d} " + numbered_warning(i)).encode() + b"\n" for i in range(300)))
    app = LogApp(path)
    async with app.run_test(size=(40, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 300)
        await pilot.press("W")
        await pilot.pause()
        view.scroll_to(y=view.max_scroll_y / 2, animate=False)  # what dragging the thumb does
        await pilot.pause()
        assert not view.follow and 120 <= view.top_line <= 180
        before = visible(view)
        await pilot.press("down")  # and from there, rows again
        await pilot.pause()
        assert visible(view)[:-1] == before[1:]
        top = view.top_line
        await pilot.press("W", "W")  # one row a line and back: still there, still paused
        await pilot.pause()
        assert view.top_line == top and not view.follow and visible(view)[0].startswith(f"{top:04d} w{top}_00")
        view.scroll_to(y=0, animate=False)
        await pilot.pause()
        assert visible(view)[0].startswith("0000 w0_00")
        view.scroll_to(y=view.max_scroll_y, animate=False)
        await pilot.pause()
        assert view.follow and visible(view)[-1].endswith("w299_39")


# --- unwrapped: sideways -----------------------------------------------------------------------------

@sync
async def test_left_and_right_scroll_cut_lines_8_columns_and_shift_half_a_screen(tmp_path):
    path = tmp_path / "train.log"
    path.write_bytes(b"".join(b"step %d\n" % i for i in range(5)) + LONG_WARNING.encode() + b"\n")
    app = LogApp(path)
    async with app.run_test(size=(50, 10)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.index.line_count == 6 and view.max_scroll_x > 0)
        await pilot.pause()
        width = view.scrollable_content_region.width

        assert "long lines cut: W wraps, ←/→ scroll" in str(view.border_subtitle)
        await pilot.press("right")
        assert view.scroll_x == 8 and visible(view)[5] == LONG_WARNING[8:8 + width]
        await pilot.press("shift+right")
        assert view.scroll_x == 8 + width // 2
        assert visible(view)[5] == LONG_WARNING[8 + width // 2:8 + width // 2 + width]
        await pilot.press("left")
        assert view.scroll_x == width // 2
        await pilot.press("shift+left", "shift+left")
        assert view.scroll_x == 0 and visible(view)[5] == LONG_WARNING[:width]
        await pilot.press(*["shift+right"] * 12)  # stops at the end of the longest line
        assert view.scroll_x == view.max_scroll_x and visible(view)[5].endswith("END_OF_WARNING")
