"""``python -m r2et.cli``: the ``r2et`` command."""

from r2et.cli.app import run

if __name__ == "__main__":
    run()
