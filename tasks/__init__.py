"""Celery: the app (celery_app), and thin tasks that take ids and call one service function each."""
