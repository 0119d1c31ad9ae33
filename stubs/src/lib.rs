//! rethink-stubs: reTHINK protocol stubs (WebAssembly components of the WIT package
//! `rethink:stub`, `wit/stub.wit`).
//!
//! - [`catalogue`]: the stubs this node serves (the built-in `default` and the operator's
//!   `stubs.dir`), checked, reloaded on change, and their reTHINK descriptors.
//!
//! The wasmtime host that runs stubs inside the node is not built yet; see "Planned parts" in
//! `ARCHITECTURE.md`.

pub mod catalogue;
