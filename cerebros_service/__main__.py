"""``python -m cerebros_service run | validate | serve`` (see cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
