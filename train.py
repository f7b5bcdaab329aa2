"""Train a CNN or FCN: ``python train.py [hydra overrides]`` (see README.md)."""

from weightshare.train import main

if __name__ == "__main__":
    main()
