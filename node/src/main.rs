//! The `rethink-node` binary: everything it does is in [`rethink_node::cli`], so that the
//! integration tests can run the same program as a child process.

fn main() -> std::process::ExitCode {
    rethink_node::cli::main()
}
