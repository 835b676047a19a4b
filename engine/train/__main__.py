"""`python -m engine.train RUN_DIR [--resume]`: the trainer, as `accelerate launch` starts it."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.train",
                                     description="Train the run in RUN_DIR (its frozen config.toml).")
    parser.add_argument("run_dir", help="the run directory (projects/<project>/runs/<run-id>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    args = parser.parse_args(argv)
    from engine.train.loop import train

    return train(args.run_dir, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
