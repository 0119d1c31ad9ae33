//! The crate's one error type: why a policy directory was refused, pointing into the file.

/// Why [`Engine::load`](crate::Engine::load) refused a policy directory.
///
/// Lines and columns are 1-based; columns count characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A policy file does not parse.
    #[error("{file}:{line}:{col}: {message}")]
    Parse {
        /// The policy file.
        file: String,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        col: usize,
        /// What is wrong.
        message: String,
    },
    /// A policy does not validate (strictly) against the schema.
    #[error("{file}:{line}:{col}: policy \"{policy}\": {message}")]
    Validation {
        /// The policy file holding the policy.
        file: String,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        col: usize,
        /// The policy id.
        policy: String,
        /// What is wrong.
        message: String,
    },
    /// `entities.json` does not parse or does not conform to the schema.
    #[error("{file}: {message}")]
    Entities {
        /// The entities file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The schema does not parse, or lacks what the node relies on.
    #[error("{file}: {message}")]
    Schema {
        /// The schema file.
        file: String,
        /// What is wrong (with `line:col` when Cedar knows it).
        message: String,
    },
    /// Two policies have the same id.
    #[error("duplicate policy id \"{id}\": in {first} and in {second}")]
    DuplicateId {
        /// The id.
        id: String,
        /// The file of the first policy with that id.
        first: String,
        /// The file of the second one.
        second: String,
    },
}
