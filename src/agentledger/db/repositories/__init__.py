"""Repositories: the queries and statements over agentledger's tables. Each hangs off the unit
of work (:class:`agentledger.db.uow.UnitOfWork`) and never commits."""
