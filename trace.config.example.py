"""tracer's configuration file: every option, with its default.

`python -m tracer init` writes this file as ./trace.config.py. tracer reads the first of: the
path given to tracer.install(config_path=...), the file named by TRACE_CONFIG_PATH,
./trace.config.py in the working directory, and trace.config.py next to the entry point (the
script or module that runs as __main__, such as the one `python -m tracer run` starts). Every
module-level name is an option; imports, functions and classes under other names are ignored,
and any other unknown name is an error at install(). Environment variables (TRACE_APP_NAME,
TRACE_REPORTER_TYPE, TRACE_REPORTER_CONFIG, TRACE_DISABLED, TRACE_SAMPLE_RATE) override the file,
and keyword arguments to tracer.install() override both. Every value below is the default.
"""

# The same modules as `import reporters`; this name works even in a project that has a package
# called reporters of its own.
from tracer import reporters

# The service name in every span, and the name of its spool file. Default: the name of the
# script that runs (back for back.py) or of the module (mypkg.app for -m mypkg.app).
# app_name = "my-service"

# Where finished spans go: an object with send(data, callback), made by calling one of
# reporters.stdout / memory / logstash / http .create(...), e.g.
# reporters.logstash.create(type="tcp", host="localhost", port=12201). The function itself
# (reporters.logstash.create, no call) or a reporter class is an error. Default:
# reporters.stdout.create() (JSON lines; each trace as a tree on a terminal).
reporter = reporters.stdout.create()

# Requests whose header contains one of the strings ("*": any value) get no span at all.
# Header names are case-insensitive. Example: {"user-agent": ["kube-probe"]}.
ignore_headers = {}

# Request paths that get no span at all, e.g. ["/healthz", "/internal/*"]: exact, or a prefix
# when the entry ends with "*". An ignored request costs one check and produces nothing.
ignore_paths = []

# Outgoing calls to these hosts ("host" or "host:port") are not traced and get no headers.
ignore_hosts = []

# Add trace_id, span_id and request_id to every logging.LogRecord (None outside a request),
# so a formatter can print them: "%(request_id)s %(message)s".
log_correlation = False

# Propagation formats, in the order they are read; all of them are injected. "trace" is the
# original's request-id / x-span-id / x-parent / x-client-send / x-must-collect; "tracecontext"
# is W3C traceparent / tracestate; "b3" injects the single b3 header and "b3multi" the X-B3-*
# headers (both read both). A traceparent or b3 context decides the trace over a request-id,
# whose value is kept as the request id.
propagation = ["trace", "tracecontext", "b3"]

# Head sampling: a fixed fraction (0..1) of new traces (TRACE_SAMPLE_RATE also sets it), or None
# for the adaptive rate that keeps about `sample_size` traces per `collect_interval` seconds per
# process, like the original. Services follow an inbound sampled flag.
sample_rate = None
sample_size = 60
collect_interval = 120.0

# Keep-on-error: an unsampled trace is kept after all when one of its spans in this process has a
# status >= error_status (the original used 400), an exception, a network error, or lasted
# longer than slow_threshold_ms (None: never too slow). The server then answers with
# x-must-collect: 1 so its callers keep their side too. At most max_forced_per_second such
# traces are kept per second per process (0: none).
error_status = 500
slow_threshold_ms = None
max_forced_per_second = 100.0

# Redaction. Authorization, Cookie, Set-Cookie, Proxy-Authorization and X-Api-Key are always
# redacted; add more header names here. Values of the query keys sig, signature, token,
# access_token, password, AWSAccessKeyId and X-Goog-Signature become REDACTED in recorded URLs;
# add more keys here. URL credentials always become REDACTED:REDACTED@.
redact_headers = []
redact_query_keys = []

# Record the request headers of server spans (redacted, at most 64, each cut to 512 characters)
# in the tag "http.request_headers", as the original recorded all headers.
record_headers = False

# Which instrumentations to enable (None: all of "http.server", "requests", "aiohttp.client",
# "aiohttp.server", "threads").
instrument = None

# Pipeline: spans per batch, seconds between batches, spans queued at most, seconds to wait for
# a reporter's callback, seconds to flush at exit. Large batches are cheaper: each batch wakes
# tracer's threads, and every wake-up takes the GIL from the application for a moment.
batch_size = 1000
flush_interval = 1.0
max_queue = 100_000
send_timeout = 10.0
exit_timeout = 5.0

# Memory held by batches waiting for delivery (serialised, compressed); past it, the oldest
# batches go to the spool. Retries: attempts per batch and the cap of the exponential backoff.
max_queue_bytes = 64 * 1024 * 1024
max_retries = 5
max_backoff = 5.0

# Disk spool (sqlite) for batches that could not be delivered: an outage, the memory cap, exit
# before delivery. Replayed when the reporter works again, also by the next process of the same
# service. Default path: $TRACE_SPOOL_DIR/<app_name>.sqlite, else
# $XDG_CACHE_HOME/tracer/spool/<app_name>.sqlite, else ~/.cache/tracer/spool/<app_name>.sqlite.
spool = True
spool_path = None
spool_max_bytes = 256 * 1024 * 1024

# On SIGTERM, flush (or spool) before the handler that was there runs. Only from the main thread.
handle_sigterm = True

# Metrics: every request counted (sampled or not) into histograms of its duration, with process,
# GC, event-loop and tracer-health metrics. metrics_port (e.g. 9464) serves /metrics for
# Prometheus on metrics_host from a thread of tracer's own; None: no port (mount
# tracer.metrics.aiohttp_handler(), wsgi_app() or serve_http() instead). metrics_interval:
# seconds between metrics batches to the reporter (None: none). metrics_buckets: the histogram
# bucket bounds, in seconds. metrics_dir: a directory shared by the processes of a pre-forking
# server (gunicorn, os.fork workers), so that one scrape totals all of them; None: one process.
metrics = True
metrics_port = None
metrics_host = "127.0.0.1"
metrics_interval = 60.0
metrics_buckets = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
metrics_dir = None

# Memory watch (tracer.memory): after each full garbage collection, or every memory_interval
# seconds when none came, the Python heap (allocated blocks) and RSS are read on a thread of
# tracer's own, for the "stats" and "leak" events (tracer.memory.on) and, at most once per
# memory_interval, a memory batch to the reporter. A leak: one of them grew at leak_observations
# observations in a row, and went on growing for leak_window seconds, ending above its earlier
# high by 1% or more (not in the first memory_interval seconds). The time keeps a service that
# collects often (five collections in a fraction of a second) or in bursts from looking like a
# leak. Nothing runs per request; the gc callback does O(1) work.
memory_watch = True
memory_interval = 60.0
leak_observations = 5
leak_window = 300.0

# Heap snapshots (tracer.memory.snapshot()): a census of the Python heap by type, the largest
# containers, RSS and allocation sites, written as gzip JSON for `tracer heap show|diff`.
# heap_snapshot_signal: the signal that writes one (None: none); installed from the main thread
# only, after the handler already there, which still runs. With no handler before, the signal's
# default action (SIGUSR2's ends the process) no longer happens. Signals that fire routinely
# (SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGALRM, SIGWINCH, ...) are refused.
# heap_snapshot_signal_interval: seconds after a signal snapshot ends during which the signal is
# dropped (one warning), so a storm of signals is one census, not one after another.
# heap_snapshot_on_leak: write one on a leak event, at most once per heap_snapshot_min_interval
# seconds. heap_snapshot_max_files: how many of its own files tracer keeps per service in
# heap_snapshot_dir (None: tracer-heap in the system's temporary directory). Each snapshot
# pauses the process for a time that grows with its heap (see the README).
heap_snapshot_signal = "SIGUSR2"
heap_snapshot_signal_interval = 30.0
heap_snapshot_on_leak = True
heap_snapshot_min_interval = 600.0
heap_snapshot_max_files = 5
heap_snapshot_dir = None

# Turn tracer off entirely (install() then does nothing).
disabled = False
