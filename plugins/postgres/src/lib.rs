//! PostgreSQL engine plugin (in progress).
