"""amp_fl: wireless federated learning with adaptive model pruning (AMP-FL) on Flower."""

__version__ = "0.1.0"
