"""Gymnasium environment and RLlib PPO training on top of the model outputs."""
