"""Configuration the way OpenTelemetry users already have it: the ``OTEL_EXPORTER_OTLP_*``
variables, ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_EXPORTER`` when
tracer has no reporter of its own, and ``TRACE_REPORTER_TYPE=otlp|zipkin``; checked by sending to
a real receiver where the setting shows on the wire."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

from reporters import otlp, zipkin
from reporters.stdout import StdoutReporter
from tests.conftest import subprocess_env
from tests.delivery.helpers import Outcomes
from tests.export.receiver import OtlpReceiver, attributes
from tracer import config
from tracer.config import ConfigError

BATCH: dict[str, Any] = {
    "service": "svc",
    "host": "web-1",
    "pid": 1,
    "spans": [
        {
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "parent_id": None,
            "kind": "internal",
            "name": "job",
            "start_us": 1_714_564_800_000_000,
            "duration_us": 5,
        }
    ],
}


def deliver(reporter: otlp.OtlpReporter) -> None:
    outcomes = Outcomes()
    reporter.send(BATCH, outcomes)
    assert outcomes.only is None
    reporter.close()


@pytest.mark.parametrize(
    ("variables", "path"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "{base}"}, "/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "{base}/otlp/"}, "/otlp/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "{base}/otlp"}, "/otlp/v1/traces"),
        # The signal's own variable is used as it is, and wins over the generic one.
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{base}/custom"}, "/custom"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{base}/mine/v1/traces",
            },
            "/mine/v1/traces",
        ),
    ],
)
def test_endpoint_variables(receiver: OtlpReceiver, variables: dict[str, str], path: str) -> None:
    env = {k: v.format(base=receiver.endpoint) for k, v in variables.items()}
    deliver(otlp.create(env=env))
    (request,) = receiver.requests
    assert request.path == path


@pytest.mark.parametrize(
    ("suffix", "path"),
    [("", "/v1/traces"), ("/", "/v1/traces"), ("/v1/traces", "/v1/traces"), ("/p", "/p/v1/traces")],
)
def test_endpoint_argument_is_a_base_url(receiver: OtlpReceiver, suffix: str, path: str) -> None:
    deliver(otlp.create(receiver.endpoint + suffix, env={}))
    assert receiver.requests[0].path == path


def test_headers_timeout_compression_and_protocol_variables(receiver: OtlpReceiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=secret%20value, x-tenant = t1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
    }
    reporter = otlp.create(env=env)
    assert reporter.timeout == 2.5
    assert reporter.protocol == "http/json"
    deliver(reporter)
    (request,) = receiver.requests
    assert request.headers["api-key"] == "secret value"
    assert request.headers["x-tenant"] == "t1"
    assert request.content_type == "application/json"
    assert "Content-Encoding" not in request.headers


def test_signal_variables_win_and_arguments_win_over_both(receiver: OtlpReceiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": "generic=1",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "specific=2",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
    }
    deliver(otlp.create(env=env))
    deliver(otlp.create(headers={"given": "3"}, protocol="http/protobuf", timeout=4, env=env))
    first, second = receiver.requests
    assert first.headers.get("specific") == "2" and "generic" not in first.headers
    assert first.content_type == "application/json"
    assert second.headers.get("given") == "3" and "specific" not in second.headers
    assert second.content_type == "application/x-protobuf"


def test_resource_attributes_variable(receiver: OtlpReceiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,service.version=1.2%2C3",
    }
    deliver(otlp.create(env=env))
    (resource_spans,) = receiver.requests[0].message.resource_spans
    found = attributes(resource_spans.resource.attributes)
    assert found["deployment.environment.name"] == "prod"
    assert found["service.version"] == "1.2,3"
    assert found["service.name"] == "svc"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "grpc is not offered"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift", "must be one of"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "milliseconds"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0", "positive"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "br", "gzip or none"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "key=value"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "http:// or https://"),
    ],
)
def test_bad_variables_are_named(variable: str, value: str, says: str) -> None:
    env = {variable: value}
    with pytest.raises(ValueError, match=says) as raised:
        otlp.create(env=env)
    if variable != "OTEL_EXPORTER_OTLP_ENDPOINT":
        assert variable in str(raised.value)
    with pytest.raises(ConfigError, match=says) as refused:
        config.load(env={"OTEL_TRACES_EXPORTER": "otlp", **env})
    assert "OTEL_" in str(refused.value)


def test_grpc_argument_is_refused_with_the_way_out() -> None:
    with pytest.raises(ValueError, match=r"http/protobuf.*4318"):
        otlp.create("http://127.0.0.1:4317", protocol="grpc", env={})


def test_protobuf_needs_the_extra(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    # As if opentelemetry-proto were not installed: importing it fails.
    monkeypatch.setitem(
        sys.modules, "opentelemetry.proto.collector.trace.v1.trace_service_pb2", None
    )
    with pytest.raises(ValueError, match=r"dapper-tracer\[otlp\]"):
        otlp.create(receiver.endpoint, env={})
    # OTLP/JSON needs nothing.
    deliver(otlp.create(receiver.endpoint, protocol="http/json", env={}))
    assert receiver.requests[0].content_type == "application/json"


# -- tracer's configuration ----------------------------------------------------------------


def test_otel_service_name_when_tracer_names_nothing(tmp_path: Path) -> None:
    env = {"OTEL_SERVICE_NAME": "checkout", "OTEL_TRACES_EXPORTER": "none"}
    loaded = config.load(env=env)
    assert loaded.app_name == "checkout"
    assert loaded.source == "environment"
    attrs = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,team=a"}
    assert config.load(env={**attrs, "OTEL_TRACES_EXPORTER": "none"}).app_name == "from-attributes"
    assert config.load(env={**env, **attrs}).app_name == "checkout"
    # tracer's own names win.
    assert config.load(env={**env, "TRACE_APP_NAME": "mine"}).app_name == "mine"
    assert config.load(overrides={"app_name": "given"}, env=env).app_name == "given"
    (tmp_path / "trace.config.py").write_text("app_name = 'filed'\n")
    assert config.load(env=env).app_name == "filed"


def test_otel_traces_exporter_chooses_the_reporter(
    receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    chosen = config.load(env=env).reporter
    assert isinstance(chosen, otlp.OtlpReporter)
    deliver(chosen)
    assert receiver.requests[0].path == "/v1/traces"

    env = {"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://z:9411/x"}
    chosen = config.load(env=env).reporter
    assert isinstance(chosen, zipkin.ZipkinReporter) and chosen.url == "http://z:9411/x"

    assert isinstance(config.load(env={"OTEL_TRACES_EXPORTER": "console"}).reporter, StdoutReporter)

    capsys.readouterr()
    none = config.load(env={"OTEL_TRACES_EXPORTER": "none"}).reporter
    outcomes = Outcomes()
    none.send(BATCH, outcomes)
    assert outcomes.only is None
    # Configured, even if to send nothing: no "no configuration found" notice.
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["jaeger", "otlp,console", "Zipkin2"])
def test_otel_traces_exporter_refuses_what_it_cannot_do(value: str) -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        config.load(env={"OTEL_TRACES_EXPORTER": value})


def test_tracer_reporters_win_over_otel_traces_exporter(tmp_path: Path) -> None:
    env = {"OTEL_TRACES_EXPORTER": "zipkin", "TRACE_REPORTER_TYPE": "memory"}
    assert type(config.load(env=env).reporter).__name__ == "MemoryReporter"
    (tmp_path / "trace.config.py").write_text(
        "from tracer import reporters\nreporter = reporters.memory.create()\n"
    )
    assert type(config.load(env={"OTEL_TRACES_EXPORTER": "zipkin"}).reporter).__name__ == (
        "MemoryReporter"
    )


def test_trace_reporter_type_otlp_and_zipkin(receiver: OtlpReceiver) -> None:
    env = {
        "TRACE_REPORTER_TYPE": "otlp",
        "TRACE_REPORTER_CONFIG": json.dumps(
            {"endpoint": receiver.endpoint, "protocol": "http/json"}
        ),
        # The same environment's OTLP variables fill in what the JSON leaves out.
        "OTEL_EXPORTER_OTLP_HEADERS": "x-from-env=yes",
    }
    chosen = config.load(env=env).reporter
    assert isinstance(chosen, otlp.OtlpReporter) and chosen.protocol == "http/json"
    deliver(chosen)
    assert receiver.requests[0].headers["x-from-env"] == "yes"

    env = {"TRACE_REPORTER_TYPE": "zipkin", "TRACE_REPORTER_CONFIG": '{"url": "http://z/api"}'}
    chosen = config.load(env=env).reporter
    assert isinstance(chosen, zipkin.ZipkinReporter) and chosen.url == "http://z/api"

    with pytest.raises(ConfigError, match="TRACE_REPORTER_CONFIG: otlp reporter"):
        config.load(env={"TRACE_REPORTER_TYPE": "otlp", "TRACE_REPORTER_CONFIG": '{"port": 1}'})


def test_an_opentelemetry_configured_service_switches_by_its_entry_point(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Only OpenTelemetry's variables, and ``tracer run`` in place of ``opentelemetry-instrument``:
    the spans reach the OTLP receiver under the service's name."""
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import tracer

            with tracer.span("nightly-job", rows=3):
                tracer.report({"stage": "done"})
            """
        )
    )
    env = subprocess_env(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
        OTEL_SERVICE_NAME="nightly",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=test",
    )
    done = subprocess.run(
        [sys.executable, "-m", "tracer", "run", str(app)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (seen,) = receiver.wait_spans(1)
    assert seen.span.name == "nightly-job"
    assert seen.service == "nightly"
    assert seen.resource["deployment.environment.name"] == "test"
    assert seen.attributes["rows"] == 3
    assert seen.events("tracer.report")[0]["stage"] == "done"
