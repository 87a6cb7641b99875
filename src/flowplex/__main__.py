"""``python -m flowplex``: the same as the ``flowplex`` command."""

from .cli import main

if __name__ == "__main__":
    main()
