"""The monitor's training plot (textual-plotext): loss, learning rate or throughput against the step.

`TrainingHistory` folds events (`progress`, `val_loss`, `checkpoint`, `epoch`) into plain lists; it is
fed incrementally by the monitor's event tail and knows nothing of Textual. `LossPlot` draws it: raw loss
and its exponential moving average, validation-loss points, checkpoints as marks on the smoothed curve
(vertical lines on the other plots), an optional
log y axis; `p` cycles to the learning rate and to images per second. Redraws are throttled, so a fast
trainer costs at most a few plot builds a second.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from textual_plotext import PlotextPlot

SMOOTHING = 0.9
METRICS = ("loss", "lr", "img/s")
MAX_VLINES = 12  # checkpoint lines drawn on the lr/img/s plots, when there are no more than this
MAX_POINTS = 2000  # plotted points per series; longer histories are thinned evenly


class Ema:
    """Exponential moving average with TensorBoard's debiasing, so the first points are not dragged
    towards the first value (or zero)."""

    def __init__(self, beta: float = SMOOTHING):
        self.beta, self.raw, self.n = beta, 0.0, 0

    def add(self, value: float) -> float:
        self.n += 1
        self.raw = self.beta * self.raw + (1 - self.beta) * value
        return self.value

    @property
    def value(self) -> float:
        return self.raw / (1 - self.beta ** self.n) if self.n else 0.0


@dataclass
class TrainingHistory:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    lr_steps: list[int] = field(default_factory=list)
    img_s: list[float] = field(default_factory=list)
    img_s_steps: list[int] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)  # the newest progress event
    _ema: "Ema" = field(default_factory=lambda: Ema(), repr=False)

    def absorb(self, events: Iterable[dict[str, Any]]) -> bool:
        """Take new events; True if anything plotted changed."""
        changed = False
        for ev in events:
            kind = ev.get("kind")
            step = ev.get("step")
            if not isinstance(step, (int, float)):
                if kind == "epoch" and isinstance(ev.get("seconds"), (int, float)):
                    self.epoch_seconds.append(float(ev["seconds"]))
                continue
            step = int(step)
            if kind == "progress":
                self.last = ev
                loss = ev.get("loss")
                if isinstance(loss, (int, float)) and math.isfinite(loss):
                    if self.steps and step <= self.steps[-1]:
                        # A resumed run repeats steps after its checkpoint: keep the curve monotone.
                        while self.steps and self.steps[-1] >= step:
                            self.steps.pop(), self.loss.pop(), self.smoothed.pop()
                        self._ema = Ema()
                        for v in self.loss:
                            self._ema.add(v)
                    self.steps.append(step)
                    self.loss.append(float(loss))
                    self.smoothed.append(self._ema.add(float(loss)))
                    changed = True
                lr = ev.get("lr")
                if isinstance(lr, (int, float)):
                    self.lr_steps.append(step)
                    self.lr.append(float(lr))
                    changed = True
                ips = ev.get("img_s", ev.get("img/s"))
                if isinstance(ips, (int, float)):
                    self.img_s_steps.append(step)
                    self.img_s.append(float(ips))
                    changed = True
            elif kind == "val_loss" and isinstance(ev.get("loss"), (int, float)):
                self.val_steps.append(step)
                self.val_loss.append(float(ev["loss"]))
                changed = True
            elif kind == "checkpoint":
                if step not in self.checkpoints:
                    self.checkpoints.append(step)
                    changed = True
            elif kind == "epoch" and isinstance(ev.get("seconds"), (int, float)):
                self.epoch_seconds.append(float(ev["seconds"]))
        return changed


def thin(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    if len(xs) <= limit:
        return xs, ys
    stride = math.ceil(len(xs) / limit)
    return xs[::stride] + xs[-1:], ys[::stride] + ys[-1:]


def curve_at(xs: list[int], ys: list[float], x: float) -> float:
    """The curve's value at `x`, interpolated between the points either side (clamped at the ends)."""
    i = bisect.bisect_left(xs, x)
    if i == 0:
        return ys[0]
    if i >= len(xs):
        return ys[-1]
    x0, x1 = xs[i - 1], xs[i]
    if x1 == x0:
        return ys[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)


def checkpoint_marks(h: TrainingHistory) -> list[tuple[int, float]]:
    """Where each checkpoint sits on the smoothed curve. Saves rarely fall on a logged step (progress is
    logged every few steps; an epoch's save is wherever the epoch ends), so the curve is interpolated."""
    if not h.steps:
        return []
    return [(c, curve_at(h.steps, h.smoothed, c)) for c in h.checkpoints if c <= h.steps[-1]]


def step_ticks(xs: list[int], n: int = 5) -> list[int]:
    """Whole-number step ticks over the plotted range (plotext's own would read 92.5)."""
    lo, hi = min(xs), max(xs)
    if hi - lo < n:
        return list(range(lo, hi + 1))
    return sorted({round(lo + (hi - lo) * i / (n - 1)) for i in range(n)})


class LossPlot(PlotextPlot):
    """Draws a `TrainingHistory`; call `update_history()` after feeding it."""

    DEFAULT_CSS = """
    LossPlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, history: TrainingHistory | None = None, *, min_interval: float = 0.5,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.history = history or TrainingHistory()
        self.metric = "loss"
        self.log_scale = False
        self.min_interval = min_interval
        self._dirty = True
        self._timer = None

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def update_history(self) -> None:
        """Redraw soon (at most once per `min_interval`)."""
        self._dirty = True
        if self._timer is None:
            self._timer = self.set_timer(self.min_interval if self.min_interval > 0 else 0.001, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._dirty:
            self._draw()

    def toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._draw()

    def cycle_metric(self) -> str:
        self.metric = METRICS[(METRICS.index(self.metric) + 1) % len(METRICS)]
        self._draw()
        return self.metric

    def _draw(self) -> None:
        self._dirty = False
        h = self.history
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        shown: list[int] = []  # the steps on the x axis, for the ticks
        if self.metric == "loss":
            xs, ys = thin(h.steps, h.loss)
            if xs:
                plt.plot(xs, ys, label="loss", color="gray", marker="braille")
                sx, sy = thin(h.steps, h.smoothed)
                plt.plot(sx, sy, label="smoothed", color="cyan", marker="braille")
            if h.val_steps:
                plt.scatter(h.val_steps, h.val_loss, label="val", color="orange", marker="●")
            # Checkpoints as marks on the smoothed curve: vertical lines would hide it when saves are frequent.
            marks = checkpoint_marks(h)
            if marks:
                plt.scatter([m[0] for m in marks], [m[1] for m in marks], label="checkpoint", color="yellow",
                            marker="◆")
            shown = xs + h.val_steps + [m[0] for m in marks]
            title = "loss" + (" (log)" if self.log_scale else "")
            if self.log_scale and (h.loss or h.val_loss):
                plt.yscale("log")
        else:
            lr = self.metric == "lr"
            xs, ys = thin(h.lr_steps, h.lr) if lr else thin(h.img_s_steps, h.img_s)
            if xs:
                plt.plot(xs, ys, label=self.metric, color="green" if lr else "magenta", marker="braille")
                if len(h.checkpoints) <= MAX_VLINES:
                    for step in h.checkpoints:
                        if xs[0] <= step <= xs[-1]:
                            plt.vline(step, "yellow")
            shown = xs
            title = "learning rate" if lr else "images per second"
        if shown:
            plt.xticks(step_ticks(shown))
        plt.title(title)
        plt.xlabel("step")
        if not (h.steps or h.lr_steps):
            plt.title(f"{title}: waiting for the first progress event")
        self.refresh()
