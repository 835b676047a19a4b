"""tunelab tests; a package so `python -m tests.fake_trainer` works."""
