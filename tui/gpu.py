"""GPU readings through NVML (`nvidia-ml-py`'s `pynvml`), degrading to "no NVIDIA GPU" cleanly.

`GpuProbe.open()` initialises NVML once; without the library, the driver or a device it returns a probe
whose `available` is False and whose `reason` says why, and which never touches NVML again (the GPU panel
then polls nothing). `TUNELAB_NO_GPU=1` forces that, for deterministic screenshots and tests.
Readings never raise: a field NVML cannot give (power on some boards) is None.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    utilization: int | None  # percent
    memory_used: int | None  # bytes
    memory_total: int | None  # bytes
    temperature: int | None  # °C
    power: float | None  # W
    power_limit: float | None  # W


class GpuProbe:
    def __init__(self, nvml: Any = None, reason: str = "no NVIDIA GPU"):
        self._nvml = nvml
        self.reason = "" if nvml is not None else reason
        self._handles: list[Any] = []
        if nvml is not None:
            try:
                self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            except Exception as e:  # noqa: BLE001 - any NVML failure means no GPU to show
                self._nvml, self.reason = None, f"no NVIDIA GPU ({e})"
            if self._nvml is not None and not self._handles:
                self._nvml, self.reason = None, "no NVIDIA GPU"

    @classmethod
    def open(cls) -> "GpuProbe":
        if os.environ.get("TUNELAB_NO_GPU"):
            return cls(None, "no NVIDIA GPU")
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError:
            return cls(None, "no NVIDIA GPU (nvidia-ml-py not installed)")
        try:
            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded, …
            return cls(None, "no NVIDIA GPU")
        return cls(pynvml)

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def read(self) -> list[GpuReading]:
        if self._nvml is None:
            return []
        nv = self._nvml
        out = []
        for i, h in enumerate(self._handles):
            out.append(GpuReading(
                index=i,
                name=_try(lambda: _text(nv.nvmlDeviceGetName(h)), f"GPU {i}"),
                utilization=_try(lambda: int(nv.nvmlDeviceGetUtilizationRates(h).gpu)),
                memory_used=_try(lambda: int(nv.nvmlDeviceGetMemoryInfo(h).used)),
                memory_total=_try(lambda: int(nv.nvmlDeviceGetMemoryInfo(h).total)),
                temperature=_try(lambda: int(nv.nvmlDeviceGetTemperature(h, 0))),  # 0: NVML_TEMPERATURE_GPU
                power=_try(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
                power_limit=_try(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
            ))
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Any, default: Any = None) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - a field the board does not support
        return default
