"""Training methods by name. A method is one file here and one line in `METHODS`."""
from __future__ import annotations

from typing import Any

from engine.train.methods.base import ExportInfo, Method
from engine.train.methods.dreambooth import DreamBoothMethod
from engine.train.methods.full import FullMethod
from engine.train.methods.lora import LoraMethod
from engine.train.methods.pivotal import PivotalMethod
from engine.train.methods.textual_inversion import TextualInversionMethod

METHODS: dict[str, type[Method]] = {
    "lora": LoraMethod,
    "full": FullMethod,
    "dreambooth": DreamBoothMethod,
    "textual_inversion": TextualInversionMethod,
    "pivotal": PivotalMethod,
}


def make_method(cfg: Any, components: Any, accelerator: Any, weight_dtype: Any) -> Method:
    try:
        cls = METHODS[cfg.method]
    except KeyError:
        raise ValueError(f"method = {cfg.method!r} is not available in this trainer; available: "
                         f"{', '.join(sorted(METHODS))}") from None
    return cls(cfg, components, accelerator, weight_dtype)


__all__ = ["ExportInfo", "METHODS", "Method", "make_method"]
