"""The throttle configuration a Celery app carries, and the names made from it.

:func:`workers.app.create_app` binds a :class:`~throttle.config.Config` to the app it
makes; the worker's bootsteps, the task base and the publishers read it back from
their app with :func:`app_config`, so nothing passes configuration through globals or
the environment.
"""

from __future__ import annotations

from typing import Any, cast

from throttle.config import Config, load_config


def bind_config(app: Any, config: Config) -> None:
    """Make ``config`` the throttle configuration of ``app``."""
    app.llm_config = config


def has_config(app: Any) -> bool:
    """Whether ``app`` was made by :func:`workers.app.create_app` (or bound to a config)."""
    return getattr(app, "llm_config", None) is not None


def app_config(app: Any) -> Config:
    """The throttle configuration ``app`` was built with; an app made some other way
    (a user's own Celery app that sends or runs the tasks) gets
    :func:`~throttle.config.load_config`'s, bound to it on first use."""
    config = getattr(app, "llm_config", None)
    if config is None:
        config = load_config()
        bind_config(app, config)
    return cast(Config, config)


def released_queue(config: Config) -> str:
    """The queue of tasks coming back at their slot (parked or released by a pass)."""
    return f"{config.celery.queue}.released"
