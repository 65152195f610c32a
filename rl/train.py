"""PPO training of the hybrid agent on RLlib's new API stack (spec 001 §25.3, issue #17), CPU torch.

``train_ppo`` builds ``PPOConfig().environment(ENV_NAME, env_config=...).env_runners(...).training(...)``,
runs ``algo.train()`` until ``RLTrainConfig.timesteps`` environment steps were sampled and saves the
algorithm with ``algo.save_to_path``. The environment is ``rl.env.TradingEnv``, built by the env creator
registered under ``ENV_NAME`` (``ray.tune.registry.register_env``) from ``env_config``: the episodes
travel as one object in the Ray object store (``"episodes"``: an ``ObjectRef`` of a list of
``EpisodeData``), plus ``"episode_bars"`` (random windows of that many bars per training episode).

Checkpoint layout (``algo.save_to_path(dir)``; verified on Ray 2.60)::

    dir/rllib_checkpoint.json, algorithm_state.pkl, env_runner/...
    dir/learner_group/learner/rl_module/default_policy/{class_and_ctor_args.pkl,module_state.pkl,metadata.json}

The last folder (``module_dir``) is the RLModule with its value head: ``RLModule.from_checkpoint``
restores it without an Algorithm (serving; ``storage.rl_registry`` logs that folder to MLflow).

Defaults (``RLTrainConfig``) differ from spec 001 §25.3's draft ``RLAgentConfig`` where the planted-edge
control (bench/rl.py, bench/RESULTS.md #17) showed they must: with the spec's lr 3e-4, entropy 0.01,
a 64×64 MLP, rewards in fractions of equity (~1e-4 a bar) and a decision every 1m bar, PPO did not learn
the planted edge in 40k steps (the entropy bonus outweighed the rewards ~100×, and a random policy
never holds a position long enough for a drift of ~0.002% a bar to beat a ~0.1% round trip). Tuned:
mark-to-market reward in % of the starting equity (``reward_multiplier`` 100), entropy 0.001, lr 1e-3,
a 32×32 MLP, and a decision every 15 bars (``decision_every``, ``DecisionEvery``). The cadence is part
of the model: ``raytrade train-rl`` records it (MLflow param, version tag ``rl_decision_every``),
``rl.evaluate.evaluate_policy`` steps through the same ``DecisionEvery`` and serving asks the policy only
at bars whose index (open time // 1 min) is a multiple of it (``actors.decide``).

Sized for 2 cores: ``num_env_runners`` 0 (sampling in the driver) or 1, one local learner.
Ray must be initialised by the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rl.env import Action, TradingEnv
from rl.episodes import EpisodeData

ENV_NAME = "raytrade-trading-env"
MODULE_ID = "default_policy"
#: The RLModule folder inside an ``algo.save_to_path`` checkpoint.
MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / MODULE_ID


@dataclass(frozen=True, slots=True)
class RLTrainConfig:
    """PPO hyperparameters (spec §25.3 names, RLlib's new-stack arguments) and the run's size."""

    timesteps: int = 20_000
    episode_bars: int | None = 1_440  # bars per training episode (random window); None: whole episodes
    learning_rate: float = 1e-3
    train_batch_size: int = 2_000  # env steps per train() iteration (the spec's n_steps)
    minibatch_size: int = 128  # the spec's batch_size
    num_epochs: int = 5  # the spec's n_epochs
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.001
    hidden: tuple[int, ...] = (32, 32)
    reward: str = "mark_to_market"  # rl.env.TradingEnv's reward mode ("realized": the spec's literal one)
    reward_multiplier: float = 100.0  # × the env's 1 / initial equity: rewards in % of the starting equity
    decision_every: int = 15  # bars per training decision (``DecisionEvery``); 1: every bar
    num_env_runners: int = 0
    seed: int = 0
    checkpoint_dir: Path | None = None  # default: a fresh temporary folder

    def params(self) -> dict[str, Any]:
        """Flat parameters for MLflow."""
        return {
            "algorithm": "PPO", "timesteps": self.timesteps, "episode_bars": self.episode_bars,
            "learning_rate": self.learning_rate, "train_batch_size": self.train_batch_size,
            "minibatch_size": self.minibatch_size, "num_epochs": self.num_epochs, "gamma": self.gamma,
            "gae_lambda": self.gae_lambda, "clip_range": self.clip_range, "ent_coef": self.ent_coef,
            "hidden": ",".join(map(str, self.hidden)), "reward": self.reward,
            "reward_multiplier": self.reward_multiplier, "decision_every": self.decision_every, "num_env_runners": self.num_env_runners, "seed": self.seed,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrainProgress:
    """One ``algo.train()`` iteration: env steps so far of the total, mean episode return (NaN: none yet)."""

    iteration: int
    env_steps: int
    total_steps: int
    episode_return_mean: float
    steps_per_s: float


@dataclass
class RLTrainResult:
    """A finished run: the checkpoint, its RLModule folder, throughput and the last iteration's stats.

    ``algo``: the live Algorithm when ``train_ppo(keep_algo=True)`` (the caller stops it), else None.
    """

    checkpoint_dir: Path
    module_dir: Path
    iterations: int
    env_steps: int
    wall_s: float
    ppo_env_steps_per_s: float
    episode_return_mean: float
    history: list[TrainProgress] = field(default_factory=list)
    algo: Any = None


class DecisionEvery(gym.Wrapper[np.ndarray, int, np.ndarray, int]):
    """Training wrapper: the agent decides every ``k`` bars; its action acts at the first bar, then the
    env runs HOLD (which keeps the position and its barriers) for the other ``k − 1``; the reward is the
    sum of the ``k`` bars' rewards (an episode's end stops early). The one cadence implementation:
    ``rl.evaluate.evaluate_policy`` steps through it too, and serving decides at the same cadence (a
    policy asked every bar would act differently: CLOSE learned every 15 bars fires far more often)."""

    def __init__(self, env: TradingEnv, k: int) -> None:
        super().__init__(env)
        if k < 1:
            raise ValueError(f"decision_every must be ≥ 1, got {k}")
        self.k = k

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        total = 0.0
        a = int(action)
        for _ in range(self.k):
            obs, reward, terminated, truncated, info = self.env.step(a)
            total += float(reward)
            a = int(Action.HOLD)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


ENV_SETTINGS = frozenset({"config", "risk", "policy", "label"})  # TradingEnv's simulator and guard arguments


def make_env(env_config: dict[str, Any]) -> gym.Env[np.ndarray, int]:
    """The env creator: ``TradingEnv`` over the episodes of ``env_config["episodes"]`` (an ObjectRef of a
    list of ``EpisodeData``, or the list itself), random windows of ``episode_bars``, reward mode
    ``reward`` times ``reward_multiplier`` (× the env's 1 / initial equity), a decision every
    ``decision_every`` bars (``DecisionEvery``). The simulator and guards: ``env_config["env_kwargs"]``
    (``config`` a ``SimConfig``, ``risk`` a ``RiskConfig``, ``policy`` a ``PolicyConfig``, ``label`` a
    ``LabelSpec``: the installation's, as the evaluation and the backtest use them), else
    ``TradingEnv``'s defaults."""
    import ray

    episodes = env_config["episodes"]
    if isinstance(episodes, ray.ObjectRef):
        episodes = ray.get(episodes)
    settings = dict(env_config.get("env_kwargs") or {})
    unknown = set(settings) - ENV_SETTINGS
    if unknown:
        raise ValueError(f"make_env: unknown env_kwargs {sorted(unknown)}; known: {sorted(ENV_SETTINGS)}")
    env = TradingEnv(
        list(episodes),
        episode_bars=env_config.get("episode_bars"),
        reward=env_config.get("reward", "mark_to_market"),
        **settings,
    )
    env.reward_scale *= float(env_config.get("reward_multiplier", 1.0))
    k = int(env_config.get("decision_every", 1))
    return env if k == 1 else DecisionEvery(env, k)


def register_trading_env() -> str:
    """Register ``make_env`` under ``ENV_NAME`` (idempotent) and return the name."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_env)
    return ENV_NAME


def ppo_config(episodes_ref: Any, config: RLTrainConfig, env_kwargs: Mapping[str, Any] | None = None) -> Any:
    """The ``PPOConfig`` of a run (new API stack, torch, CPU); ``env_kwargs``: the environment's
    simulator and guards (``make_env``)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    batch = max(config.train_batch_size, 1)
    runners = max(config.num_env_runners, 0)
    fragment = max(batch // max(runners, 1), 1)
    return (
        PPOConfig()
        .framework("torch")
        .environment(
            register_trading_env(),
            env_config={
                "episodes": episodes_ref,
                "episode_bars": config.episode_bars,
                "reward": config.reward,
                "reward_multiplier": config.reward_multiplier,
                "decision_every": config.decision_every,
                "env_kwargs": dict(env_kwargs or {}),
            },
        )
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=1,
            rollout_fragment_length=fragment,
            num_cpus_per_env_runner=1,
        )  # fmt: skip
        .learners(num_learners=0)
        .training(
            lr=config.learning_rate,
            train_batch_size_per_learner=batch,
            minibatch_size=min(config.minibatch_size, batch),
            num_epochs=config.num_epochs,
            gamma=config.gamma,
            lambda_=config.gae_lambda,
            clip_param=config.clip_range,
            entropy_coeff=config.ent_coef,
        )
        .rl_module(model_config={"fcnet_hiddens": list(config.hidden), "vf_share_layers": False})
        .debugging(seed=config.seed, log_level="ERROR")
    )


def _return_mean(result: dict[str, Any]) -> float:
    value = result.get("env_runners", {}).get("episode_return_mean")
    return float(value) if value is not None else float("nan")


def train_ppo(
    episodes_train: Sequence[EpisodeData],
    config: RLTrainConfig | None = None,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    keep_algo: bool = False,
    env_kwargs: Mapping[str, Any] | None = None,
) -> RLTrainResult:
    """Train PPO on ``episodes_train`` until ``config.timesteps`` env steps were sampled; save the
    checkpoint (``config.checkpoint_dir`` or a temporary folder) and return where it is.

    ``env_kwargs``: the environment's simulator and guards (``make_env``; train with the settings the
    evaluation uses). ``progress`` is called after every ``algo.train()`` iteration. ``ppo_env_steps_per_s``: sampled env
    steps ÷ wall time of the ``train()`` calls (sampling and learning; building the algorithm excluded).
    """
    import tempfile

    import ray

    config = config or RLTrainConfig()
    if not episodes_train:
        raise ValueError("train_ppo: no training episode")
    if config.timesteps <= 0:
        raise ValueError(f"timesteps must be > 0, got {config.timesteps}")
    ref = ray.put(list(episodes_train))
    algo = ppo_config(ref, config, env_kwargs).build_algo()
    history: list[TrainProgress] = []
    steps, train_s, iteration, ret = 0, 0.0, 0, float("nan")
    try:
        while steps < config.timesteps:
            t0 = time.perf_counter()
            result = algo.train()
            train_s += time.perf_counter() - t0
            iteration += 1
            steps = int(result.get("num_env_steps_sampled_lifetime")
                        or result["env_runners"]["num_env_steps_sampled_lifetime"])  # fmt: skip
            ret = _return_mean(result)
            update = TrainProgress(
                iteration, steps, config.timesteps, ret, steps / train_s if train_s else 0.0
            )
            history.append(update)
            if progress is not None:
                progress(update)
        out = Path(config.checkpoint_dir or tempfile.mkdtemp(prefix="raytrade-ppo-"))
        out.mkdir(parents=True, exist_ok=True)
        path = Path(algo.save_to_path(str(out.resolve())))
    finally:
        if not keep_algo:
            algo.stop()
    module_dir = path / MODULE_SUBDIR
    if not (module_dir / "module_state.pkl").is_file():
        raise RuntimeError(f"PPO checkpoint {path} has no RLModule at {MODULE_SUBDIR}")
    return RLTrainResult(
        checkpoint_dir=path, module_dir=module_dir, iterations=iteration, env_steps=steps, wall_s=train_s,
        ppo_env_steps_per_s=steps / train_s if train_s else 0.0, episode_return_mean=ret, history=history,
        algo=algo if keep_algo else None,
    )  # fmt: skip


def load_module(module_dir: str | Path) -> Any:
    """The trained RLModule from its checkpoint folder (``RLTrainResult.module_dir``), no Algorithm."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(str(Path(module_dir).resolve()))
