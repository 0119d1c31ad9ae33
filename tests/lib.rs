//! rethink-tests: holds only the integration-test binary `it` (see `it/main.rs`).
