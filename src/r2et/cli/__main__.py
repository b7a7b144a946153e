"""``python -m r2et.cli``: the ``r2et`` command."""

import sys

from r2et.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
