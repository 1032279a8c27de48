"""``python -m gatednorm``: see gatednorm.cli."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
