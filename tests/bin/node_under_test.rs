//! The node's own program (`rethink_node::cli`), built inside the tests package so that the
//! integration tests find it through `CARGO_BIN_EXE_rethink-node-under-test` and can run it as a
//! child process: stopped with a real SIGTERM, or killed with a real SIGKILL.

fn main() -> std::process::ExitCode {
    rethink_node::cli::main()
}
