"""tracer's configuration file: every option, with its default.

`python -m tracer init` writes this file as ./trace.config.py. tracer reads the first of: the
path given to tracer.install(config_path=...), the file named by TRACE_CONFIG_PATH,
./trace.config.py in the working directory, and trace.config.py next to the entry point (the
script or module that runs as __main__, such as the one `python -m tracer run` starts). Every
module-level name is an option; imports, functions and classes under other names are ignored,
and any other unknown name is an error at install(). Every option has an environment variable
too, TRACE_ and its name in capitals (TRACE_SAMPLE_RATE=0.1; the reporter's are
TRACE_REPORTER_TYPE and TRACE_REPORTER_CONFIG), which overrides the file; keyword arguments to
tracer.install() override both. Every value below is the default. The reference of every option,
with its bounds and variable: docs/configuration.md.
"""

# The same modules as `import reporters`; this name works even in a project that has a package
# called reporters of its own.
from tracer import reporters


# -- Service --------------------------------------------------------------------------------------
# Who this process is and where its spans go.

# The service name in every span, and the name of its spool file. Default: the name of the script
# that runs (back for back.py) or of the module (mypkg.app for -m mypkg.app); OTEL_SERVICE_NAME
# (or service.name in OTEL_RESOURCE_ATTRIBUTES) when tracer's own settings name none.
# app_name = "my-service"

# Where finished spans go: an object with send(data, callback), made by calling one of
# reporters.stdout / memory / logstash / http / otlp / zipkin .create(...), e.g.
# reporters.logstash.create(type="tcp", host="localhost", port=12201). The function itself (no
# call) or a reporter class is an error. From the environment: TRACE_REPORTER_TYPE names a
# reporter type and TRACE_REPORTER_CONFIG holds its options as a JSON object; else
# OTEL_TRACES_EXPORTER (otlp, zipkin, console, none). Default: reporters.stdout.create() (JSON
# lines; each trace as a tree on a terminal).
reporter = reporters.stdout.create()


# -- Requests -------------------------------------------------------------------------------------
# Which requests and calls are traced, and what their spans record.

# Requests whose header contains one of the strings ("*": any value) get no span at all. Header
# names are case-insensitive. Example: {"user-agent": ["kube-probe"]}; the variable holds it as a
# JSON object.
ignore_headers = {}

# Request paths that get no span at all, e.g. ["/healthz", "/internal/*"]: exact, or a prefix
# when the entry ends with "*". An ignored request costs one check and produces nothing.
ignore_paths = []

# Outgoing calls to these hosts ("host" or "host:port") are not traced and get no headers.
ignore_hosts = []

# Add trace_id, span_id and request_id to every logging.LogRecord (None outside a request), so a
# formatter can print them: "%(request_id)s %(message)s".
log_correlation = False

# Propagation formats, in the order they are read; all of them are injected. "trace" is the
# original's request-id / x-span-id / x-parent / x-client-send / x-must-collect; "tracecontext"
# is W3C traceparent / tracestate; "b3" injects the single b3 header and "b3multi" the X-B3-*
# headers (both read both). A traceparent or b3 context decides the trace over a request-id,
# whose value is kept as the request id.
propagation = ["trace", "tracecontext", "b3"]

# Header names to redact, besides Authorization, Cookie, Set-Cookie, Proxy-Authorization and
# X-Api-Key, which always are.
redact_headers = []

# Query keys whose values become REDACTED in recorded URLs, besides sig, signature, token,
# access_token, password, AWSAccessKeyId and X-Goog-Signature, which always do. URL credentials
# always become REDACTED:REDACTED@.
redact_query_keys = []

# Record the request headers of server spans (redacted, at most 64, each cut to 512 characters)
# in the tag "http.request_headers", as the original recorded all headers.
record_headers = False

# Record each database statement as db.query.text, its literals replaced by ? (never its
# parameters); False leaves the text out of every span and keeps the operation and table only.
record_queries = True

# N+1 queries: a server span holding more than this many database calls with the same statement
# gets the tag "n_plus_one" ({"statement", "count"}, the most repeated one); 0 or None: not
# checked.
n_plus_one_threshold = 10

# Which instrumentations to enable, by name ("http.server", "wsgiref", "flask", "django",
# "starlette", "fastapi", "uvicorn", "aiohttp.client", "aiohttp.server", "requests", "httpx",
# "urllib3", "http.client", "sqlite3", "psycopg", "psycopg2", "asyncpg", "redis", "threads", and
# those of installed packages); None: all of them. An unknown name is an error; a named library
# that is not installed is one warning.
instrument = None


# -- Sampling -------------------------------------------------------------------------------------
# Which traces are kept. Services follow an inbound sampled flag; an unsampled trace is kept
# after all when one of its spans in this process fails or is slow.

# Head sampling: a fixed fraction (0..1) of new traces, or None for the adaptive rate that keeps
# about sample_size traces per collect_interval seconds per process, like the original.
sample_rate = None

# The adaptive rate's traces per collect_interval per process.
sample_size = 60

# The adaptive rate's period, in seconds.
collect_interval = 120.0

# Keep-on-error: an unsampled trace is kept after all when one of its spans in this process has a
# status >= error_status (the original used 400), an exception or a network error. The server
# then answers with x-must-collect: 1 so its callers keep their side too.
error_status = 500

# Keep-on-error also keeps a trace with a span that lasted longer than this, in milliseconds
# (None: never too slow).
slow_threshold_ms = None

# At most this many traces are kept by keep-on-error per second per process (0: none).
max_forced_per_second = 100.0


# -- Delivery -------------------------------------------------------------------------------------
# Spans are batched and sent by tracer's own threads. Large batches are cheaper: each batch wakes
# tracer's threads, and every wake-up takes the GIL from the application for a moment.

# Spans per batch.
batch_size = 1000

# Seconds between batches.
flush_interval = 1.0

# Spans queued at most; past it, new spans are dropped and counted.
max_queue = 100_000

# Seconds to wait for a reporter's callback.
send_timeout = 10.0

# Seconds to flush at exit (0.5 at least); what is not delivered by then is spooled.
exit_timeout = 5.0

# Memory held by batches waiting for delivery (serialised, compressed), in bytes; past it, the
# oldest batches go to the spool.
max_queue_bytes = 64 * 1024 * 1024

# Attempts per batch before it goes to the spool.
max_retries = 5

# The cap of the exponential backoff between attempts, in seconds.
max_backoff = 5.0


# -- Spool ----------------------------------------------------------------------------------------
# A disk spool (SQLite) for batches that could not be delivered: an outage, the memory cap, exit
# before delivery. Replayed when the reporter works again, also by the next process of the same
# service.

# Keep undelivered batches in the spool (False: they are dropped and counted).
spool = True

# The spool file. Default: `$TRACE_SPOOL_DIR/<app_name>.sqlite`, else
# `$XDG_CACHE_HOME/tracer/spool/<app_name>.sqlite`, else
# `~/.cache/tracer/spool/<app_name>.sqlite`.
spool_path = None

# The spool's cap of payload bytes.
spool_max_bytes = 256 * 1024 * 1024

# On SIGTERM, flush (or spool) before the handler that was there runs. Only from the main thread.
handle_sigterm = True


# -- Metrics --------------------------------------------------------------------------------------
# Every request counted (sampled or not) into histograms of its duration, with process, GC,
# event-loop and tracer-health metrics.

# Record request, runtime and tracer metrics.
metrics = True

# A port (e.g. 9464) that serves /metrics for Prometheus on metrics_host from a thread of
# tracer's own; None: no port (mount tracer.metrics.aiohttp_handler(), wsgi_app() or serve_http()
# instead).
metrics_port = None

# The address metrics_port listens on.
metrics_host = "127.0.0.1"

# Seconds between metrics batches to the reporter (None: none).
metrics_interval = 60.0

# The histogram bucket bounds, in seconds, increasing (each from 0 to 86400); the variable holds
# them comma-separated.
metrics_buckets = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]

# A directory shared by the processes of a pre-forking server (gunicorn, os.fork workers), so
# that one scrape totals all of them; None: this process alone.
metrics_dir = None


# -- Memory ---------------------------------------------------------------------------------------
# After each full garbage collection, or every memory_interval seconds when none came, the Python
# heap (allocated blocks) and RSS are read on a thread of tracer's own, for the stats and leak
# events (tracer.memory.on) and a memory batch to the reporter. Nothing runs per request; the gc
# callback does O(1) work.

# Watch the heap and RSS (tracer.memory).
memory_watch = True

# Seconds between readings when no full collection came, and at least between memory batches.
memory_interval = 60.0

# A leak: the heap or RSS grew at this many observations in a row, and went on growing for
# leak_window seconds, ending above its earlier high by 1% or more (not in the first
# memory_interval seconds).
leak_observations = 5

# Seconds the growth must last to be a leak: it keeps a service that collects often (five
# collections in a fraction of a second) or in bursts from looking like one.
leak_window = 300.0


# -- Heap snapshots -------------------------------------------------------------------------------
# tracer.memory.snapshot(): a census of the Python heap by type, the largest containers, RSS and
# allocation sites, written as gzip JSON for `tracer heap show|diff`. Each snapshot pauses the
# process for a time that grows with its heap.

# The signal that writes a snapshot (None: none); installed from the main thread only, after the
# handler already there, which still runs. With no handler before, the signal's default action
# (SIGUSR2's ends the process) no longer happens. Signals that fire routinely (SIGCHLD, SIGINT,
# SIGTERM, SIGHUP, SIGPIPE, SIGALRM, SIGWINCH, ...) are refused.
heap_snapshot_signal = "SIGUSR2"

# Seconds after a signal snapshot ends during which the signal is dropped (one warning), so a
# storm of signals is one census, not one after another.
heap_snapshot_signal_interval = 30.0

# Write a snapshot on a leak event, at most once per heap_snapshot_min_interval.
heap_snapshot_on_leak = True

# Seconds between two snapshots written on leaks.
heap_snapshot_min_interval = 600.0

# How many of its own snapshot files tracer keeps per service in heap_snapshot_dir.
heap_snapshot_max_files = 5

# Where snapshots are written (None: tracer-heap in the system's temporary directory). The folder
# must be the process user's own and writable by nobody else.
heap_snapshot_dir = None


# -- Profiles -------------------------------------------------------------------------------------
# tracer.profile(seconds): CPU profiles of every thread, sampled from a thread of tracer's own,
# each sample tied to the trace, span and route its thread or task was serving; written as
# speedscope JSON, collapsed stacks and pprof for `tracer profile show`, and sent to the
# reporters. Requests pay for the span map only while a profile runs.

# The signal that starts a profile of profile_signal_seconds (None: none); installed from the
# main thread only, after the handler already there, which still runs. The same signals as
# heap_snapshot_signal are refused.
profile_signal = None

# How long a profile started by profile_signal runs, in seconds.
profile_signal_seconds = 30.0

# Samples per second of a profile, at most: the sampler samples less often while its own CPU
# would pass 1% of a core.
profile_rate = 100.0

# The longest a profile may run, in seconds; a longer one is refused.
profile_max_seconds = 300.0

# Profile all the time at profile_continuous_rate, one profile_continuous_window after another
# (an on-demand profile ends the current window early).
profile_continuous = False

# Samples per second of the continuous profile.
profile_continuous_rate = 10.0

# Seconds per continuous profile (each written and reported on its own).
profile_continuous_window = 60.0

# Serve GET /debug/profile?seconds=N on metrics_port, which starts a profile.
profile_debug_endpoint = True

# How many of its own profiles (three files each) tracer keeps per service in profile_dir.
profile_max_files = 10

# Where profiles are written (None: tracer-profile in the system's temporary directory). The
# folder must be the process user's own and writable by nobody else.
profile_dir = None


# -- Switch ---------------------------------------------------------------------------------------
# Turning tracer off.

# Turn tracer off entirely (install() then does nothing).
disabled = False
