# Image of the workers, Flower, the gateway and the provider emulator (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY throttle ./throttle
COPY workers ./workers
COPY tasks ./tasks
COPY testing ./testing
COPY gateway ./gateway
COPY tools ./tools

# A compiler only for dependencies without a wheel for this platform; removed again.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev make \
    && pip install ".[ops,gateway]" \
    && apt-get purge -y gcc libc6-dev make \
    && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 llmt

USER llmt

CMD ["celery", "-A", "workers.app", "worker", "-P", "threads", "-c", "16", "--loglevel", "INFO", "-E"]
