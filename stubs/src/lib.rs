//! rethink-stubs: reserved for the wasmtime host of reTHINK protocol stubs (WebAssembly
//! components), their WIT interface and the signed stub catalogue.
//!
//! Not built yet: this crate is empty and nothing depends on it. The node neither serves nor runs
//! stubs, and messages for other domains are answered with 404 "no route to domain". See
//! "Planned parts" in `ARCHITECTURE.md`.
