"""
Fixtures shared by the integration tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.etcd_fixture import (
    EtcdCluster,
    EtcdMember,
    EtcdNotFound,
    find_etcd,
)


@pytest.fixture
def etcd_binary() -> str:
    """
    The etcd binary; no binary fails the test, with how to get one.
    """
    try:
        return find_etcd()
    except EtcdNotFound as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def etcd(etcd_binary: str, tmp_path: Path) -> Iterator[EtcdMember]:
    """
    A running single-member etcd on free loopback ports, stopped afterwards.
    """
    member = EtcdMember(etcd_binary, tmp_path)
    member.start()
    try:
        yield member
    finally:
        member.stop()


@pytest.fixture
def etcd_cluster(etcd_binary: str, tmp_path: Path) -> Iterator[EtcdCluster]:
    """
    A running three-member etcd cluster on loopback, stopped afterwards.
    """
    cluster = EtcdCluster(etcd_binary, tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
