"""Cluster-mode tests. They need a control plane, the operator and a node-agent, and two users'
kubeconfigs; `tests/e2e` (`cargo test -p microsandbox-e2e --test python_sdk`, run by
`tests/e2e/run.sh`) sets all of that up and runs this directory with:

- ``MSB_TEST_KUBECONFIG_DEV``: a user allowed to create, watch, delete and exec into Sandboxes;
- ``MSB_TEST_KUBECONFIG_VIEWER``: a user who may only read them;
- ``MSB_TEST_NAMESPACE``: the namespace (container isolation allowed there);
- ``MSB_TEST_NODE_SLOTS``: how many sandboxes the node takes.
"""

from __future__ import annotations

import os

import pytest

from microsandbox import Cluster


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests through tests/e2e/run.sh")
    return value


@pytest.fixture(scope="session")
def namespace() -> str:
    return _env("MSB_TEST_NAMESPACE")


@pytest.fixture(scope="session")
def dev(namespace: str) -> Cluster:
    return Cluster(
        kubeconfig=_env("MSB_TEST_KUBECONFIG_DEV"), namespace=namespace, ready_timeout=60
    )


@pytest.fixture(scope="session")
def viewer(namespace: str) -> Cluster:
    return Cluster(
        kubeconfig=_env("MSB_TEST_KUBECONFIG_VIEWER"), namespace=namespace, ready_timeout=60
    )


@pytest.fixture(scope="session")
def node_slots() -> int:
    return int(_env("MSB_TEST_NODE_SLOTS"))
