"""Tiny real RLModule checkpoints for the RL serving tests.

``make_checkpoint`` builds RLlib PPO's default torch RLModule for the agent's spaces (17-dim Box,
Discrete(4)) from ``PPOConfig().get_rl_module_spec()`` — the module class, constructor arguments and
state the learner trains — with weights seeded by ``seed``, and writes it with
``RLModule.save_to_path``: the same folder format as ``algo.save_to_path()``'s
``learner_group/learner/rl_module/default_policy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.rl_obs import OBS_DIM


def build_module(seed: int) -> Any:
    import gymnasium as gym
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig

    torch.manual_seed(seed)
    config = PPOConfig().environment(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32),
        action_space=gym.spaces.Discrete(4),
    )
    module = config.get_rl_module_spec().build()
    with torch.no_grad():  # larger weights than the init so actions differ between seeds and rows
        for p in module.parameters():
            p.mul_(4.0)
    return module


def make_checkpoint(folder: Path, seed: int) -> Path:
    """Write a seeded PPO RLModule checkpoint into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    build_module(seed).save_to_path(str(folder))
    return folder


def observations(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, (n, OBS_DIM)).astype(np.float32)


def direct_outputs(seed: int, obs: np.ndarray) -> tuple[Any, Any, Any]:
    """(argmax actions, softmax probabilities, values) of the seeded module, by RLlib's own calls."""
    import torch
    from ray.rllib.core.columns import Columns

    module = build_module(seed)
    batch = {Columns.OBS: torch.from_numpy(obs)}
    with torch.no_grad():
        dist_cls = module.get_inference_action_dist_cls()
        logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
        actions = dist_cls.from_logits(logits).to_deterministic().sample().numpy()
        probs = torch.softmax(logits, -1).double().numpy()
        values = module.compute_values(batch).double().numpy()
    return actions, probs, values
