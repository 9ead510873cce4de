"""``python -m sipdial``: the same as the ``sipdial`` console script."""

from sipdial.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
