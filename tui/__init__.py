"""tunelab's Textual app and the `tunelab` command line. Imports only the engine's light modules."""
