"""The HTTP front door: an OpenAI- (and Anthropic-) compatible server in front of the
throttled pool. Every call becomes the throttled Celery task (``tasks.aenqueue``).

Modules, one job each: ``settings`` (the ``[gateway]`` table, keys), ``errors`` (the
providers' error shapes), ``translate`` (a request body into the task's arguments),
``backpressure`` (answer 429 instead of queueing past the caller's wait),
``relay`` (reading a streamed task's events), ``health``, ``metrics``, ``app`` (the
routes), ``serve`` (uvicorn). Tools layer: it imports tasks, workers and throttle;
nothing imports it.
"""
