//! The room tables, each test body on SQLite and on PostgreSQL (`crate::store::tests`).
