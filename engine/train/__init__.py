"""The trainer: everything that imports torch, diffusers, peft or accelerate (`python -m engine.train RUN_DIR`).

Nothing outside this package imports it, except through a subprocess; the light `engine` modules and the
TUI stay fast to start. `tiny` builds the offline test model; `models` loads `model.base`.
"""
