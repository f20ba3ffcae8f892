"""Example clients that pass chaosstream's `check` battery; copy them into your app.

* :mod:`chaosstream.examples.resilient_client` -- an OpenAI-SDK streaming
  client that detects cut streams, retries with jittered backoff honouring
  Retry-After, falls back to non-streaming, and fails loudly when it gives up.
* :mod:`chaosstream.examples.naive_client` -- the counter-example: the SDK
  streaming quickstart with the SDK's defaults, what `chaosstream demo` shows
  failing (a cut answer printed as whole, a stall that hangs).
"""

__all__ = ["naive_client", "resilient_client"]
