"""``tracer run manage.py runserver`` with Django's autoreloader: the process that serves is the
reloader's child, which tracer run's bootstrap installs tracer in too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.django.conftest import Served
from tests.support.spans import Sink, free_port, untraced_get

TRACE = "6e0c63257de34c926f9efcd03927272e"


@pytest.fixture(scope="module")
def reloading(sink: Sink) -> Iterator[Served]:
    port = free_port()
    served = Served(
        sink,
        "django-reloading",
        ["-m", "tracer", "run", "manage.py", "runserver", f"127.0.0.1:{port}"],
        port,
    )
    yield served
    served.stop()


def test_the_reloaders_child_traces_each_request_once(reloading: Served, sink: Sink) -> None:
    headers = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    answer = untraced_get(f"{reloading.url}/api/users/4/", headers=headers)
    assert answer.status_code == 200
    (server,) = sink.server_spans(TRACE)
    assert server["name"] == "GET /api/users/<int:id>/"
    assert server["parent_id"] == "00f067aa0ba902b7"
    assert answer.json()["span_id"] == server["span_id"]
    # The reloader's parent serves nothing and its child everything, once.
    later = "6e0c63257de34c926f9efcd039270000"
    untraced_get(
        f"{reloading.url}/hello/", headers={"traceparent": f"00-{later}-00f067aa0ba902b7-01"}
    )
    sink.server_spans(later)
    assert [s for s in sink.spans() if s["trace_id"] == TRACE] == [server]
