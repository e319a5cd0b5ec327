"""A real local Ray cluster on loopback for the whole session (skipped where Ray is not installed)."""

import logging

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install dataflywheel[ray]`")


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, logging_level=logging.WARNING,
             log_to_driver=False)
    yield ray
    ray.shutdown()
