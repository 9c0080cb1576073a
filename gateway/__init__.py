"""The HTTP front door: an OpenAI- (and Anthropic-) compatible server in front of the
throttled pool. Every call becomes the throttled Celery task (``tasks.aenqueue``).

Modules, one job each: ``settings`` (the ``[gateway]`` table, keys), ``errors`` (the
providers' error shapes), ``translate`` (a request body into the task's arguments),
``backpressure`` (answer 429 instead of queueing past the caller's wait),
``relay`` (reading a streamed task's events), ``health``, ``metrics``, ``app`` (the
routes), ``serve`` (uvicorn; ``python -m gateway``). It imports tasks, workers and
throttle; above it are only the testing package (whose local stack starts gateways)
and the tools (``llm-throttle serve``). Starlette and uvicorn (the gateway extra) are
imported only by ``app`` and ``serve``'s function.
"""
