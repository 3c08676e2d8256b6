"""Storage: SQLAlchemy models, the engine and unit of work, and migrations."""

from service.store.session import Database, bounds_from_config, get_db, init_app, make_engine

__all__ = ["Database", "bounds_from_config", "get_db", "init_app", "make_engine"]
