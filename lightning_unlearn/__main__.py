"""``python -m lightning_unlearn`` runs the command line."""

from lightning_unlearn.main import main

if __name__ == "__main__":
    main()
