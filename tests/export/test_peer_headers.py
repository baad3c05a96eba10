"""A header the configuration gives (``headers=``, the ``OTEL_EXPORTER_OTLP_*HEADERS`` variables)
is refused at create when its name is not an HTTP token or its value holds a control character,
with a message that names where it came from once and does not repeat the value."""

from __future__ import annotations

import pytest

from reporters import http as http_reporter
from reporters import otlp
from tests.delivery.helpers import Outcomes
from tests.export.raw_receiver import KINDS, RawReceiver, batch_of, make
from tracer import config
from tracer.config import ConfigError

CONTROL_VALUES = {"crlf": "%0D%0A", "nul": "%00", "escape": "%1B", "delete": "%7F"}


@pytest.mark.parametrize("encoded", list(CONTROL_VALUES.values()), ids=list(CONTROL_VALUES))
@pytest.mark.parametrize(
    "variable",
    [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    ],
)
def test_a_control_character_in_the_headers_variable_is_refused_naming_it(
    variable: str, encoded: str
) -> None:
    env = {variable: f"x-api-key=abc{encoded}def", "TRACE_REPORTER_TYPE": "otlp"}
    with pytest.raises(ConfigError) as refused:
        config.load(env=env)
    message = str(refused.value)
    assert message.count(variable) == 1, message
    assert message.count("otlp reporter") <= 1, message
    assert "TRACE_REPORTER_CONFIG" not in message
    assert "control character" in message
    # The value may be a secret: it is not repeated.
    assert "abc" not in message
    with pytest.raises(ValueError, match=variable):
        otlp.create(env={variable: f"x-api-key=abc{encoded}def"})


@pytest.mark.parametrize("value", ["a\x00b", "a\rb", "a\nb", "a\x1bb", "a\x7fb", "a\x0bb"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_control_character_in_the_headers_option_is_refused(kind: str, value: str) -> None:
    with pytest.raises(ValueError, match="control character") as refused:
        make(kind, "http://127.0.0.1:9", headers={"X-Api-Key": value})
    assert value not in str(refused.value)
    assert str(refused.value).startswith(f"{kind} reporter:" if kind != "logstash" else "logstash:")


@pytest.mark.parametrize("name", ["X-A\x00", "X A", "X:A", "", "X\u00e9"])
def test_a_header_name_that_is_not_a_token_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid header"):
        http_reporter.create("http://127.0.0.1:9/", headers={name: "v"})


def test_a_tab_inside_a_header_value_is_allowed(peer: RawReceiver) -> None:
    reporter = http_reporter.create(peer.url + "/spans", headers={"X-A": "a\tb"})
    outcomes = Outcomes()
    reporter.send(batch_of(1), outcomes)
    assert outcomes.only is None
    reporter.close()
    assert peer.requests[0].headers["x-a"] == "a\tb"
