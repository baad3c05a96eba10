"""What the tests share: real servers and receivers on 127.0.0.1, child processes, waiting.

- :mod:`tests.support.servers`: HTTP servers served from a thread (polled every 50 ms, so that
  stopping one is quick), a quiet request handler base, TCP listeners, a refused port.
- :mod:`tests.support.receivers`: the HTTP sink and the raw-bytes receiver the reporters send to.
- :mod:`tests.support.aio`: an aiohttp application served by a loop in its own thread.
- :mod:`tests.support.children`: the environment of a child Python, a child whose output is read
  as it comes, waiting for a forked child.
- :mod:`tests.support.waiting`: waiting for an event (a condition becoming true), never for a
  guessed time.
- :mod:`tests.support.tls`: a throw-away CA and server certificates.
"""
