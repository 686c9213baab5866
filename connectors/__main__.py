"""`python -m connectors ...` (also `torchrun -m connectors ...`): the `connectors` command line."""

from .cli import main

if __name__ == "__main__":
    main()
