"""Example tracer configuration: copy to trace.config.py next to your entry point.

tracer reads ./trace.config.py (or the file named by TRACE_CONFIG_PATH, or the path given to
tracer.install(config_path=...)). Every module-level name is an option; imports, functions and
classes are ignored, and any other unknown name is an error at install(). Environment variables
(TRACE_APP_NAME, TRACE_REPORTER_TYPE, TRACE_REPORTER_CONFIG, TRACE_DISABLED) override the file,
and keyword arguments to tracer.install() override both. Every value below is the default.
"""

import reporters

# The service name in every span. Default: the name of the script that was started.
app_name = "my-service"

# Where finished spans go: reporters.stdout / memory / logstash / http .create(...), or any object
# with send(data, callback). Default: reporters.stdout.create() (JSON lines; a tree on a terminal).
reporter = reporters.stdout.create()

# Requests whose header contains one of the strings ("*": any value) get no span at all.
# Header names are case-insensitive. Example: {"user-agent": ["kube-probe"]}.
ignore_headers = {}

# Request paths (exact) that get no span at all, e.g. ["/healthz"].
ignore_paths = []

# Outgoing calls to these hosts ("host" or "host:port") are not traced and get no headers.
ignore_hosts = []

# Add trace_id, span_id and request_id to every logging.LogRecord (None outside a request),
# so a formatter can print them: "%(request_id)s %(message)s".
log_correlation = False

# Propagation formats, in the order they are read; all of them are injected.
propagation = ["trace", "tracecontext", "b3"]

# Head sampling: a fixed fraction (0..1) of new traces, or None for the adaptive rate that keeps
# about `sample_size` traces per `collect_interval` seconds per process, like the original.
sample_rate = None
sample_size = 60
collect_interval = 120.0

# Which instrumentations to enable (None: all of "http.server", "requests", "aiohttp.client",
# "aiohttp.server", "threads").
instrument = None

# Pipeline: spans per batch, seconds between batches, spans queued at most, seconds to wait for
# a reporter's callback, seconds to flush at exit.
batch_size = 200
flush_interval = 1.0
max_queue = 100_000
send_timeout = 10.0
exit_timeout = 5.0

# Turn tracer off entirely (install() then does nothing).
disabled = False
