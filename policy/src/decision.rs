//! The answer to a query.

/// Whether a message is allowed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// `true` if some permit matched and no forbid did.
    pub allowed: bool,
    /// The ids of the policies that determined the decision, sorted: the matching forbids on a
    /// denial, the matching permits on an allow; empty on a default denial (nothing matched).
    pub policies: Vec<String>,
    /// Evaluation errors, each prefixed with the policy id (`id: message`). A policy that errs
    /// is ignored by Cedar; a query the crate cannot evaluate at all is denied with one error.
    pub errors: Vec<String>,
}

impl Decision {
    /// A denial no policy determined, because the query could not be evaluated.
    pub(crate) fn failed(error: String) -> Self {
        Self {
            allowed: false,
            policies: Vec::new(),
            errors: vec![error],
        }
    }
}
