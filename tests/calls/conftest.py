"""The real servers the cross-library tests call: Redis and PostgreSQL."""

from tests.support.postgres import postgres_server as postgres_server
from tests.support.redis_server import redis_server as redis_server
