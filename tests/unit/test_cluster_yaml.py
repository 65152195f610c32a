"""The `ray up` files are valid for Ray's own launcher: Ray's schema (``validate_config``) after
``prepare_config`` (what `ray up` does first), and the placement resources raytrade relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def prepared(name: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / name).read_text())
    out = prepare_config(config)  # defaults and node types filled in, as `ray up` does
    validate_config(out)  # Ray's JSON schema (ray-schema.json); raises on any unknown or bad field
    return out


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.local.yaml"])
def test_cluster_files_are_valid_ray_up_files(name):
    config = prepared(name)
    assert config["cluster_name"] == "raytrade"
    # every node installs the project with the pinned dependencies (bootstrap.sh python: -c constraints.txt)
    assert any("scripts/bootstrap.sh python" in c for c in config["setup_commands"])
    assert "-c constraints.txt" in (ROOT / "scripts/bootstrap.sh").read_text()
    assert "." in config["file_mounts"].values()


def test_aws_cluster_places_execution_on_the_head_and_ingest_everywhere():
    config = prepared("cluster.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert head["resources"]["execution"] == 1  # the single writer lives on the head
    assert workers and all("execution" not in t["resources"] for t in workers)
    assert all(t["resources"]["ingest_slot"] >= 1 for t in workers)
    assert sum(t["min_workers"] for t in workers) >= 2
    head_setup = "\n".join(config["head_setup_commands"])
    for key in (
        "RAYTRADE_DB_URL",
        "RAYTRADE_REDIS_URL",
        "RAYTRADE_MLFLOW_TRACKING_URI",
        "RAYTRADE_RAY_ADDRESS",
    ):
        assert key in head_setup, key
    assert "mlflow server" in head_setup and "--serve-artifacts" in head_setup
    # Ray's GCS and the bus's Redis do not share a port on the head
    assert "--port=6380" in " ".join(config["head_start_ray_commands"])


def test_local_cluster_marks_its_placeholders_and_gives_the_resources():
    text = (ROOT / "cluster.local.yaml").read_text()
    assert text.count("<<< REPLACE") >= 3
    config = prepared("cluster.local.yaml")
    assert config["provider"]["type"] == "local"
    assert '"execution": 1' in " ".join(config["head_start_ray_commands"])
    assert "ingest_slot" in " ".join(config["worker_start_ray_commands"])
    assert "execution" not in " ".join(config["worker_start_ray_commands"])


def test_validate_config_rejects_a_broken_file():
    """The check can fail: an unknown top-level key is refused by Ray's schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["head_setup_comands"] = []
    with pytest.raises(Exception, match="head_setup_comands"):
        validate_config(prepare_config(config))
