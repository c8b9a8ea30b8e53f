# Celery's app is loaded when Django starts, so @shared_task uses it (the Celery docs' layout).
from .celery import app as celery_app

__all__ = ("celery_app",)
