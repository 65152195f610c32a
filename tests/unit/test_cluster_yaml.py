from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


def test_cluster_yaml_is_a_valid_ray_up_file():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER.read_text())
    prepared = prepare_config(config)  # what `ray up` does first: defaults and node types filled in
    validate_config(prepared)
    assert prepared["cluster_name"] == "raytrade"
    assert any("bootstrap.sh python" in c for c in prepared["setup_commands"])
