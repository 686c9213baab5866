"""`python -m tokenlm ...` (also `torchrun -m tokenlm ...`): the `tokenlm` command line."""

from .cli import main

if __name__ == "__main__":
    main()
