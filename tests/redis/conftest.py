"""The Redis server of tests/support/redis_server, for the tests of this folder."""

from tests.support.redis_server import redis_cluster as redis_cluster
from tests.support.redis_server import redis_server as redis_server
