"""``python -m gnnopt.eval``: the command-line name of :mod:`gnnopt.bench.cli`.

    python -m gnnopt.eval --task fmnist17 --rule pna-fmnist17 --baseline adam --out results/
"""
from .bench.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
