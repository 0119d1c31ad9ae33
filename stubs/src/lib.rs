//! rethink-stubs: the wasmtime host for protocol stubs, the WIT files and the stub catalogue
//! (DESIGN.md section 7).
//!
//! Not built yet: the node does not serve or run stubs so far, and messages for other domains are
//! answered with 404 "no route to domain".
