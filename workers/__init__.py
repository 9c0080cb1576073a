"""Celery side: app factory, worker middleware, dispatcher."""
