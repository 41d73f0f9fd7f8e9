"""The rules of agentledger that need no database: records, validation, encoding, projection,
naming, cursors, history windows, retention rules, transcripts, search queries.

Pure Python: nothing here imports SQLAlchemy or the rest of agentledger (only
:mod:`agentledger.errors`), so every rule can be read and tested on its own.
"""
