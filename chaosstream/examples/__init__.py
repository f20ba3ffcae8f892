"""Example clients that pass chaosstream's `check` battery; copy them into your app.

* :mod:`chaosstream.examples.resilient_client` -- an OpenAI-SDK streaming
  client that detects cut streams, retries with jittered backoff honouring
  Retry-After, falls back to non-streaming, and fails loudly when it gives up.
"""
