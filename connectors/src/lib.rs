//! rethink-connectors: reserved for application services (the Matrix application-service API,
//! external and WebAssembly connectors).
//!
//! Not built yet: this crate is empty and nothing depends on it; no connector runs in the node.
//! See "Planned parts" in `ARCHITECTURE.md`.
