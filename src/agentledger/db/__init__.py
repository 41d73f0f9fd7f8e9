"""Everything that knows SQLAlchemy: column types, models, engines, the per-dialect strategy,
cached statements, the asyncpg fast path, the unit of work and its repositories."""
