//! rethink-connectors: application services (the Matrix AS API, external and WASM connectors)
//! (DESIGN.md section 7).
//!
//! Not built yet: no connector runs in the node so far.
