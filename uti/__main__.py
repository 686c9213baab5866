"""`python -m uti ...` (also `torchrun -m uti ...`): the `uti` command line."""

from .cli import main

if __name__ == "__main__":
    main()
