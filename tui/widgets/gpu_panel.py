"""The monitor's GPU panel: utilisation, memory, temperature and power per GPU, through `tui.gpu`.

With no NVIDIA GPU (no driver, no device, `TUNELAB_NO_GPU=1`) it says so once and polls nothing.
Otherwise a thread worker reads NVML every `interval` seconds and posts the readings; the handler redraws.
"""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.message import Message
from textual.widgets import Static

from tui.gpu import GpuProbe, GpuReading


def _bar(pct: float | None, width: int = 10) -> Text:
    if pct is None:
        return Text("-")
    full = int(round(max(0.0, min(100.0, pct)) / 100 * width))
    style = "green" if pct < 70 else "yellow" if pct < 90 else "red"
    t = Text("█" * full, style=style)
    t.append("░" * (width - full), style="dim")
    t.append(f" {pct:3.0f}%")
    return t


def render_readings(readings: list[GpuReading]) -> Table:
    table = Table.grid(padding=(0, 1))
    for r in readings:
        mem_pct = (100 * r.memory_used / r.memory_total) if r.memory_used is not None and r.memory_total else None
        mem = (f"{r.memory_used / 2**30:.1f}/{r.memory_total / 2**30:.0f} GiB"
               if r.memory_used is not None and r.memory_total else "-")
        temp = f"{r.temperature}°C" if r.temperature is not None else "-"
        power = (f"{r.power:.0f}/{r.power_limit:.0f} W" if r.power is not None and r.power_limit
                 else f"{r.power:.0f} W" if r.power is not None else "-")
        table.add_row(Text(f"{r.index} {r.name}", style="bold"))
        table.add_row(Text("util ", style="dim") + _bar(r.utilization))
        table.add_row(Text("mem  ", style="dim") + _bar(mem_pct) + Text(f" {mem}"))
        table.add_row(Text(f"temp {temp}   power {power}", style="dim"))
    return table


class GpuPanel(Static):
    DEFAULT_CSS = """
    GpuPanel { height: auto; border: round $primary 40%; border-title-color: $text-muted; padding: 0 1; }
    """

    class Read(Message):
        def __init__(self, readings: list[GpuReading]) -> None:
            super().__init__()
            self.readings = readings

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, GpuPanel.Read)

    def __init__(self, probe: GpuProbe | None = None, *, interval: float = 1.0, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._probe = probe
        self.interval = interval
        self.border_title = "GPU"
        self.readings: list[GpuReading] = []

    def on_mount(self) -> None:
        if self._probe is not None:
            self._started(self._probe)
        else:
            self.update(Text("looking for GPUs…", style="dim"))
            self._open()  # nvmlInit can take a while with a driver: never on the UI thread

    @work(thread=True, exclusive=True, group="gpu-read", exit_on_error=False)
    def _open(self) -> None:
        probe = GpuProbe.open()
        self.app.call_from_thread(self._started, probe)

    def _started(self, probe: GpuProbe) -> None:
        self._probe = probe
        if not probe.available:
            self.update(Text(probe.reason, style="dim"))
            return
        self._read()
        self.set_interval(self.interval, self._read)

    @work(thread=True, exclusive=True, group="gpu-read", exit_on_error=False)
    def _read(self) -> None:
        if self._probe is not None:
            self.post_message(self.Read(self._probe.read()))

    @on(Read)
    def _show(self, event: Read) -> None:
        self.readings = event.readings
        self.update(render_readings(event.readings) if event.readings else Text("no readings", style="dim"))
