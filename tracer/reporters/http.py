"""HTTP reporter: POSTs each batch as one JSON document (gzip-compressed by default).

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

from tracer.encoding import clean_text, encode_json
from tracer.reporters.base import Batch, Callback, ConnectionReporter, DeliveryError

__all__ = [
    "RETRYABLE_STATUSES",
    "Encoder",
    "HttpReporter",
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


class HttpReporter(ConnectionReporter):
    """POSTs batches to one URL; build one with :func:`create`.

    ``send`` is meant to be called from one thread at a time (the pipeline's worker); ``close``
    may be called from any thread. ``timeout`` bounds connecting and each read or write on the
    socket.
    """

    def __init__(
        self,
        *,
        url: str,
        scheme: str,
        host: str,
        port: int,
        target: str,
        headers: dict[str, str],
        gzip: bool,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
        encoder: Encoder | None = None,
    ) -> None:
        self.url = url
        self.gzip = gzip
        self.timeout = timeout
        self._scheme = scheme
        self._host = host
        self._port = port
        self._target = target
        self._headers = headers
        self._ssl_context = ssl_context
        self._encode: Encoder = encoder or encode_json
        super().__init__()
        self._conn: http.client.HTTPConnection | None = None

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
            headers = dict(self._headers)
            if body is not None:
                if self.gzip:
                    body = _gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
                    headers["Content-Encoding"] = "gzip"
                headers["Content-Length"] = str(len(body))
        except Exception as exc:
            error = DeliveryError(
                f"http reporter failed on this batch: {type(exc).__name__}: {exc}",
                retryable=False,
            )
        else:
            with self._locked():
                if self._closed:
                    error = DeliveryError("http reporter is closed", retryable=True)
                elif body is None:
                    error = None
                else:
                    error = self._post(body, headers)
        callback(error)

    def _post(self, body: bytes, headers: dict[str, str]) -> DeliveryError | None:
        reused = self._conn is not None
        try:
            return self._exchange(body, headers)
        except (
            ConnectionResetError,
            BrokenPipeError,
            ssl.SSLEOFError,
            ssl.SSLZeroReturnError,
        ) as exc:
            self._drop_connection()
            if not reused:
                return self._network_error(exc)
        except Exception as exc:
            # OSError and HTTPException (an answer that is not HTTP), or anything else the
            # answer made go wrong: the batch's fate is unknown, so it is sent again later.
            self._drop_connection()
            return self._network_error(exc)
        # The server closed the idle keep-alive connection before reading this request, so it
        # never saw it: one more try on a fresh connection.
        try:
            return self._exchange(body, headers)
        except Exception as exc:
            self._drop_connection()
            return self._network_error(exc)

    #: Statuses after which the same request may succeed later.
    retryable_statuses: frozenset[int] = RETRYABLE_STATUSES
    # How much of a 2xx answer is read; past that the connection is closed instead.
    _max_answer = _MAX_DRAIN

    def _exchange(self, body: bytes, headers: dict[str, str]) -> DeliveryError | None:
        if self._conn is None:
            self._conn = self._new_connection()
        conn = self._conn
        conn.request("POST", self._target, body=body, headers=headers)
        response = conn.getresponse()
        status = response.status
        if 200 <= status < 300:
            self._read_success(status, response)
            return None
        try:
            snippet = response.read(_MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            # The status is the answer; a body cut short only leaves the message shorter.
            snippet = b""
        # An error answer is not read to its end, so this connection cannot carry another request.
        self._drop_connection()
        phrase = clean_text(str(response.reason or "").strip(), _MAX_PEER_FIELD)
        reason = f"HTTP {status} {phrase} from {self.url}"
        text = self._describe_error(snippet, response)
        if text:
            reason += f": {clean_text(text, _MAX_ERROR_BODY)}"
        if status < 200:
            # http.client reads past a 100 Continue only: any other 1xx comes back as if final.
            return DeliveryError(f"{reason} (an interim answer, not a final one)", retryable=True)
        if status in self.retryable_statuses:
            return DeliveryError(
                reason,
                retryable=True,
                retry_after=parse_retry_after(response.getheader("Retry-After")),
            )
        if 300 <= status < 400:
            location = clean_text(str(response.getheader("Location")), _MAX_PEER_FIELD)
            reason += f" (redirects are not followed; Location: {location})"
        return DeliveryError(reason, retryable=False)

    def _read_success(self, status: int, response: http.client.HTTPResponse) -> bytes | None:
        """Read a 2xx answer's body (up to ``_max_answer`` bytes), or None when it is longer or
        cannot be read. The batch is delivered either way: only the connection is dropped."""
        try:
            answer = response.read(self._max_answer + 1)
        except (OSError, http.client.HTTPException):
            self._drop_connection()
            return None
        if len(answer) > self._max_answer or response.will_close:
            self._drop_connection()
        return answer if len(answer) <= self._max_answer else None

    def _describe_error(self, snippet: bytes, response: http.client.HTTPResponse) -> str:
        """The reason an error answer's body gives (uncleaned; the caller escapes it)."""
        return snippet.decode("utf-8", errors="replace").strip()

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._ssl_context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _drop_connection(self) -> None:
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
            f"POST {self.url} {kind}: {type(exc).__name__}: {text}", retryable=True
        )
        error.__cause__ = exc
        return error


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
    if not isinstance(url, str):
        raise ValueError(f"http reporter: url must be a string, not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"http reporter: url must start with http:// or https://, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"http reporter: bad port in url {url!r}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"http reporter: url has no host: {url!r}")
    if any(c.isspace() for c in url.strip()):
        raise ValueError(f"http reporter: url must not contain whitespace: {url!r}")
    if not timeout > 0:
        raise ValueError(f"http reporter: timeout must be positive, not {timeout}")
    if port is None:
        port = 443 if scheme == "https" else 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query

    merged: dict[str, str] = {
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
        "Accept": "application/json, */*;q=0.5",
    }
    for name, value in (headers or {}).items():
        try:
            text = check_header(name, value)
        except ValueError as exc:
            raise ValueError(f"http reporter: {exc}") from None
        if name.lower() in ("content-length", "content-encoding", "host"):
            # These describe the body and the connection; the reporter sets them itself.
            continue
        for existing in [k for k in merged if k.lower() == name.lower()]:
            del merged[existing]
        merged[name] = text
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
    return HttpReporter(
        url=safe_url,
        scheme=scheme,
        host=host,
        port=port,
        target=target,
        headers=merged,
        gzip=gzip,
        timeout=float(timeout),
        ssl_context=context,
        encoder=encoder,
    )
