//! rethink-tests: the integration-test binary `it` (see `it/main.rs`) and the node's program
//! built as `rethink-node-under-test` (`bin/node_under_test.rs`), which tests run as a child
//! process to stop it with SIGTERM or kill it with SIGKILL.
