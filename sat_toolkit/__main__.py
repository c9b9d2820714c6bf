"""``python -m sat_toolkit`` (and so ``accelerate launch -m sat_toolkit``)."""

from sat_toolkit.cli import main

if __name__ == "__main__":
    main()
