"""HTTP reporter: POSTs each batch as one JSON document (gzip-compressed by default).

This module is also the HTTP layer of the OTLP, Zipkin and Logstash-http reporters: an
:class:`HttpTarget` (the checked URL, headers, TLS and timeout), a :class:`Connection` whose
:meth:`~Connection.post` sends one body, and a :class:`StatusPolicy` that says what an answer
means for the batch. Each of those reporters is then an encoder plus a policy.

It uses the standard library's ``http.client`` on purpose: instrumentation patches clients such as
``requests``, and the reporter's own traffic must never show up in traces.

One keep-alive connection is kept open and reused. When the server closed it while idle, the
request is sent once more on a fresh connection before an error is reported.

Outcomes, as the pipeline sees them:

* 2xx: delivered, ``callback(None)``.
* 408, 429, 500, 502, 503, 504, a connection error or a timeout:
  ``DeliveryError(retryable=True)``, with ``retry_after`` set from the ``Retry-After`` header
  (seconds or an HTTP date) when it is one; any other ``Retry-After`` is ignored, so the status
  stays retryable whatever its headers say.
* an answer that is not HTTP (a garbage status line, too many or too long headers), or a 1xx
  where the final answer belongs: ``DeliveryError(retryable=True)``, since it says nothing about
  the batch.
* any other status (3xx redirects are not followed, other 4xx, 501, ...): ``DeliveryError(retryable=
  False)``, because the same request would get the same answer.

A 2xx is delivered whatever its body does (cut short, a bad ``Content-Length``): the receiver took
the batch, and sending it again would only duplicate it. Text from the receiver (its reason phrase,
the start of an error body, a ``Location``) goes into the error with control characters escaped
and its length capped, so it cannot forge a log line.
"""

from __future__ import annotations

import base64
import datetime
import email.message
import email.utils
import gzip as _gzip
import http.client
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tracer.encoding import clean_text, encode_json
from tracer.reporters.base import Batch, Callback, ConnectionReporter, DeliveryError

__all__ = [
    "DEFAULT_HEADERS",
    "HTTP_POLICY",
    "RETRYABLE_STATUSES",
    "Answer",
    "Connection",
    "Encoder",
    "HttpReporter",
    "HttpTarget",
    "StatusPolicy",
    "check_header",
    "create",
    "parse_retry_after",
]

#: Turns a batch into a request body; None means there is nothing to send.
Encoder = Callable[[Batch], bytes | None]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = 10.0
USER_AGENT = "tracer-http-reporter/0.1"
# How much of an error response is kept for the error message; the rest is not read.
_MAX_ERROR_BODY = 512
# How much of a reason phrase or a Location header goes into an error message.
_MAX_PEER_FIELD = 256
# A 2xx answer longer than this is not read to the end; the connection is closed instead.
_MAX_DRAIN = 64 * 1024
_GZIP_LEVEL = 6


# delay-seconds is ASCII digits (str.isdigit() also takes "²" and other scripts' digits). More
# than ten of them is centuries: no wait a server means, so it is not believed.
_DELAY_SECONDS = re.compile(r"[0-9]{1,10}")
# An HTTP date is 29 characters; a longer value is not one.
_MAX_DATE = 64


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date), else None.

    A date in the past gives 0. Anything else (other digits than ASCII ones, more than ten of
    them, a sign, a fraction, a date that cannot be) is None, so the caller's own backoff
    applies; this never raises. ``now`` (epoch seconds) is for tests.
    """
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _MAX_DATE:
        return None
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
        if moment.tzinfo is None:
            # HTTP dates are GMT; a date without a zone is read as such.
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        seconds = moment.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    current = time.time() if now is None else now
    return max(0.0, seconds - current)


# An HTTP header name is a token (RFC 9110, section 5.1).
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Control characters other than HTAB, which a field value may hold.
_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_header(name: object, value: object) -> str:
    """``value`` as the text to send under ``name``; a ValueError, not naming the value (it may
    be a secret), for a name that is not an HTTP token or a value with a control character (CR,
    LF, NUL, ESC, ...; a tab is allowed) or outside Latin-1."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(
            f"invalid header {name!r}: a header name is letters, digits and !#$%&'*+.^_`|~-"
        )
    text = str(value)
    control = _VALUE_CONTROL.search(text)
    if control is not None:
        raise ValueError(
            f"invalid header {name!r}: its value has a control character"
            f" ({ord(control.group()):#04x} at position {control.start()}); CR, LF, NUL and the"
            " other control characters are refused"
        )
    try:
        # http.client sends header values as Latin-1; fail here rather than on every send.
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name!r} is not Latin-1 text") from None
    return text


#: The headers every request carries unless the reporter's own or the user's replace them.
DEFAULT_HEADERS: Mapping[str, str] = {
    "User-Agent": USER_AGENT,
    "Content-Type": "application/json",
    "Accept": "application/json, */*;q=0.5",
}
# These describe the body and the connection; the reporter sets them itself.
_OWN_HEADERS = frozenset({"content-length", "content-encoding", "host"})


@dataclass(frozen=True)
class HttpTarget:
    """Where and how a reporter POSTs: a checked URL, the headers of every request, the TLS
    context and the timeout. Build one with :meth:`create`, which validates everything once.

    ``url`` is the address as errors and ``repr`` show it (no credentials, no query);
    ``path`` is the request target (path and query); ``timeout`` bounds connecting and each
    socket read or write, in seconds; ``ssl_context`` is None for plain http.
    """

    url: str
    scheme: str
    host: str
    port: int
    path: str
    headers: Mapping[str, str]
    timeout: float
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    @classmethod
    def create(
        cls,
        url: object,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: str | os.PathLike[str] | None = None,
        verify: bool = True,
        defaults: Mapping[str, str] = DEFAULT_HEADERS,
        fixed: Mapping[str, str] | None = None,
        name: str = "http reporter",
    ) -> HttpTarget:
        """A target for ``url`` (``http://`` or ``https://``); ``name`` starts every error.

        ``defaults`` are the headers of every request unless ``headers`` name them too
        (case-insensitively); ``fixed`` ones are sent whatever ``headers`` say. Credentials in
        the URL become a Basic ``Authorization`` header unless one is given. For https the
        certificate and host name are verified against the system's CAs or ``ca_file``;
        ``verify=False`` turns that off. Raises ``ValueError`` for a URL that is not an absolute
        http(s) URL with a host, a bad port, a header :func:`check_header` refuses, or a
        non-positive timeout.
        """
        if not isinstance(url, str):
            raise ValueError(f"{name}: url must be a string, not {type(url).__name__}")
        parts = urllib.parse.urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"{name}: url must start with http:// or https://, got {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{name}: bad port in url {url!r}") from None
        host = parts.hostname
        if not host:
            raise ValueError(f"{name}: url has no host: {url!r}")
        if any(c.isspace() for c in url.strip()):
            raise ValueError(f"{name}: url must not contain whitespace: {url!r}")
        if not timeout > 0:
            raise ValueError(f"{name}: timeout must be positive, not {timeout}")
        if port is None:
            port = 443 if scheme == "https" else 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query

        merged = dict(defaults)
        for header, value in [*(headers or {}).items(), *(fixed or {}).items()]:
            try:
                text = check_header(header, value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if header.lower() in _OWN_HEADERS:
                continue
            for existing in [k for k in merged if k.lower() == header.lower()]:
                del merged[existing]
            merged[header] = text
        if parts.username is not None and not any(k.lower() == "authorization" for k in merged):
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            merged["Authorization"] = f"Basic {token}"

        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = ssl.create_default_context(cafile=ca_file)
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        # The URL shown in errors and repr carries no credentials.
        netloc = host if ":" not in host else f"[{host}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        safe_url = urllib.parse.urlunsplit((scheme, netloc, parts.path or "/", "", ""))
        return cls(safe_url, scheme, host, port, path, merged, float(timeout), context)

    def request(self, body: bytes, gzip: bool) -> tuple[bytes, dict[str, str]]:
        """The body to send (gzip-compressed when asked) and the headers that go with it."""
        headers = dict(self.headers)
        if gzip:
            body = _gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Length"] = str(len(body))
        return body, headers


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: its status, reason phrase and headers, and of its body what was
    read: for a 2xx at most the policy's ``max_answer`` bytes (None when it was longer or could
    not be read), for any other status the first bytes, for the error message."""

    status: int
    reason: str
    body: bytes | None
    headers: email.message.Message

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (repeated ones joined by ``, ``), as ``http.client``
        gives it, or None."""
        values = self.headers.get_all(name)
        return None if not values else ", ".join(str(value) for value in values)


def plain_text(snippet: bytes, answer: Answer) -> str:
    """The reason an error answer's body gives, as its text (the caller escapes and caps it)."""
    return snippet.decode("utf-8", errors="replace").strip()


@dataclass(frozen=True)
class StatusPolicy:
    """What an answer means for the batch: ``retryable`` statuses may succeed later, a 2xx
    is delivered, any other is final. ``max_answer`` is how much of a 2xx is read (past it the
    connection is closed instead) and ``describe`` finds the reason in an error answer's body."""

    retryable: frozenset[int] = RETRYABLE_STATUSES
    max_answer: int = _MAX_DRAIN
    describe: Callable[[bytes, Answer], str] = plain_text

    def judge(self, answer: Answer, url: str) -> DeliveryError | None:
        """None for a 2xx; else the error to call back with, its text escaped and capped."""
        status = answer.status
        if 200 <= status < 300:
            return None
        phrase = clean_text(answer.reason.strip(), _MAX_PEER_FIELD)
        reason = f"HTTP {status} {phrase} from {url}"
        text = self.describe(answer.body or b"", answer)
        if text:
            reason += f": {clean_text(text, _MAX_ERROR_BODY)}"
        if status < 200:
            # http.client reads past a 100 Continue only: any other 1xx comes back as if final.
            return DeliveryError(f"{reason} (an interim answer, not a final one)", retryable=True)
        if status in self.retryable:
            return DeliveryError(
                reason, retryable=True, retry_after=parse_retry_after(answer.header("Retry-After"))
            )
        if 300 <= status < 400:
            location = clean_text(str(answer.header("Location")), _MAX_PEER_FIELD)
            reason += f" (redirects are not followed; Location: {location})"
        return DeliveryError(reason, retryable=False)


#: The HTTP reporter's policy (Zipkin's and Logstash's too): 408, 429, 500, 502, 503, 504 retry.
HTTP_POLICY = StatusPolicy()


class Connection:
    """One keep-alive connection to a target, and :meth:`post`; not thread-safe (the reporter
    that owns it holds its lock around every call)."""

    def __init__(self, target: HttpTarget) -> None:
        self.target = target
        self._conn: http.client.HTTPConnection | None = None

    def post(
        self, body: bytes, headers: Mapping[str, str], max_answer: int
    ) -> Answer | DeliveryError:
        """POST ``body``: the answer, or a retryable error when the connection failed or the
        answer was not HTTP. A request on a kept-alive connection the server had closed while
        idle is sent once more on a fresh one, since the server never saw it."""
        reused = self._conn is not None
        try:
            return self._exchange(body, headers, max_answer)
        except (
            ConnectionResetError,
            BrokenPipeError,
            ssl.SSLEOFError,
            ssl.SSLZeroReturnError,
        ) as exc:
            self.drop()
            if not reused:
                return self._network_error(exc)
        except Exception as exc:
            # OSError and HTTPException (an answer that is not HTTP), or anything else the
            # answer made go wrong: the batch's fate is unknown, so it is sent again later.
            self.drop()
            return self._network_error(exc)
        try:
            return self._exchange(body, headers, max_answer)
        except Exception as exc:
            self.drop()
            return self._network_error(exc)

    def _exchange(self, body: bytes, headers: Mapping[str, str], max_answer: int) -> Answer:
        if self._conn is None:
            self._conn = self._new_connection()
        self._conn.request("POST", self.target.path, body=body, headers=dict(headers))
        response = self._conn.getresponse()
        status = response.status
        read: bytes | None
        if 200 <= status < 300:
            read = self._read_success(response, max_answer)
        else:
            try:
                read = response.read(_MAX_ERROR_BODY)
            except (OSError, http.client.HTTPException):
                # The status is the answer; a body cut short only leaves the message shorter.
                read = b""
            # An error answer is not read to its end: this connection cannot carry another.
            self.drop()
        return Answer(status, str(response.reason or ""), read, response.msg)

    def _read_success(self, response: http.client.HTTPResponse, limit: int) -> bytes | None:
        """A 2xx answer's body up to ``limit`` bytes, or None when it is longer or cannot be
        read. The batch is delivered either way: only the connection is dropped."""
        try:
            answer = response.read(limit + 1)
        except (OSError, http.client.HTTPException):
            self.drop()
            return None
        if len(answer) > limit or response.will_close:
            self.drop()
        return answer if len(answer) <= limit else None

    def _new_connection(self) -> http.client.HTTPConnection:
        target = self.target
        if target.scheme == "https":
            return http.client.HTTPSConnection(
                target.host, target.port, timeout=target.timeout, context=target.ssl_context
            )
        return http.client.HTTPConnection(target.host, target.port, timeout=target.timeout)

    def drop(self) -> None:
        """Close the connection; the next :meth:`post` opens a fresh one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _network_error(self, exc: BaseException) -> DeliveryError:
        kind = "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else "failed"
        # An HTTPException's text may quote the answer (BadStatusLine has the line itself).
        text = clean_text(str(exc), _MAX_ERROR_BODY)
        error = DeliveryError(
            f"POST {self.target.url} {kind}: {type(exc).__name__}: {text}", retryable=True
        )
        error.__cause__ = exc
        return error


class HttpReporter(ConnectionReporter):
    """POSTs each batch, as ``encoder`` makes it, to one target; build one with :func:`create`.

    ``send`` is meant to be called from one thread at a time (the pipeline's worker); ``close``
    may be called from any thread. ``policy`` says what each answer means for the batch.
    """

    def __init__(
        self,
        target: HttpTarget,
        *,
        gzip: bool = True,
        encoder: Encoder | None = None,
        policy: StatusPolicy = HTTP_POLICY,
    ) -> None:
        self.target = target
        self.url = target.url
        self.timeout = target.timeout
        self.gzip = gzip
        self.policy = policy
        self._encode: Encoder = encoder or encode_json
        super().__init__()
        self._connection = Connection(target)

    def __repr__(self) -> str:
        return f"<HttpReporter {self.url}>"

    def send(self, data: Batch, callback: Callback) -> None:
        """POST one batch, then call ``callback`` exactly once; never raises on a delivery error.

        A batch the encoder turns into nothing is delivered without a request. A batch it fails
        on is not retryable; a failure while sending or reading the answer is. Exceptions raised
        by ``callback`` itself propagate to the caller.
        """
        error: BaseException | None
        try:
            body = self._encode(data)
            request = None if body is None else self.target.request(body, self.gzip)
        except Exception as exc:
            error = DeliveryError(
                f"http reporter failed on this batch: {type(exc).__name__}: {exc}",
                retryable=False,
            )
        else:
            with self._locked():
                if self._closed:
                    error = DeliveryError("http reporter is closed", retryable=True)
                elif request is None:
                    error = None
                else:
                    answer = self._connection.post(*request, self.policy.max_answer)
                    if isinstance(answer, DeliveryError):
                        error = answer
                    else:
                        error = self.policy.judge(answer, self.url)
        callback(error)

    def _drop_connection(self) -> None:
        self._connection.drop()


def create(
    url: str,
    headers: Mapping[str, str] | None = None,
    gzip: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    ca_file: str | os.PathLike[str] | None = None,
    verify: bool = True,
    *,
    encoder: Encoder | None = None,
) -> HttpReporter:
    """Create a reporter that POSTs each batch to ``url`` (``http://`` or ``https://``).

    ``headers`` are added to every request (an ``Authorization`` header, say); credentials in
    the URL (``https://user:pass@host/``) become a Basic ``Authorization`` header unless one is
    given. ``gzip`` compresses the body. ``timeout`` bounds connecting and each socket read or
    write, in seconds. For https the certificate and host name are verified against the system's
    CAs or ``ca_file``; ``verify=False`` turns that off and must be asked for. ``encoder`` turns
    a batch into the request body (default: the batch as one JSON document); when it returns
    None the batch has nothing to send and counts as delivered without a request.

    Raises ``ValueError`` for a URL that is not an absolute http(s) URL with a host, a bad port,
    a header that :func:`check_header` refuses (a control character in its value, say), or a
    non-positive timeout.
    """
    target = HttpTarget.create(
        url, headers=headers, timeout=timeout, ca_file=ca_file, verify=verify
    )
    return HttpReporter(target, gzip=gzip, encoder=encoder)
