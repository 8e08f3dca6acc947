import pytest

from tests.support.hosttrees import copy_host


@pytest.fixture
def host_tree(tmp_path):
    """host_tree("name") -> a private copy of a captured host tree."""
    return lambda name: copy_host(name, tmp_path)
