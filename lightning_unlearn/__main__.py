"""``python -m lightning_unlearn`` runs the command line."""

from lightning_unlearn.main import run

if __name__ == "__main__":
    run()
