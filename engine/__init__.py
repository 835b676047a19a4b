"""tunelab's engine: on-disk formats (light modules) and the trainer (engine.train, heavy).

Light modules (project, captions, config, schema, rundir, supervisor, launch, atomic, contact_sheet)
never import torch, diffusers or textual, so the TUI and `tunelab check` start fast.
"""
