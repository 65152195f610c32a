"""Walk-forward splits, LightGBM multi-target trainable, Ray Tune sweeps, promotion gates."""
