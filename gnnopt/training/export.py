"""``python -m gnnopt.training.export NAME``: the former name of ``python -m gnnopt.training card NAME --ship``.

A shipped checkpoint's card and weights now come from its recipe (``recipes/NAME/recipe.json``),
so the run and evaluation folders are no longer passed by hand.
"""
from __future__ import annotations

import sys

from .__main__ import recipe_main


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    print("note: `python -m gnnopt.training.export` is now `python -m gnnopt.training card NAME --ship`",
          file=sys.stderr)
    return recipe_main(["card", *args])


if __name__ == "__main__":
    raise SystemExit(main())
