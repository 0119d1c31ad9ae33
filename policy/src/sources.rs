//! The input of [`Engine::load`](crate::Engine::load): the contents of a policy directory,
//! each file with its name so that errors can point into it.

/// One file: its name (for errors) and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// The file name, as errors should show it (`policies.cedar`).
    pub name: &'a str,
    /// The file's contents.
    pub text: &'a str,
}

/// A whole policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources<'a> {
    /// `schema.cedarschema` (Cedar schema syntax).
    pub schema: Source<'a>,
    /// The `*.cedar` policy files, in the order their `file#index` ids should be assigned.
    pub policies: Vec<Source<'a>>,
    /// `entities.json`, the operator's entity store, if there is one.
    pub entities: Option<Source<'a>>,
}

impl<'a> Sources<'a> {
    /// A policy directory's files under their standard names: `schema.cedarschema`, the
    /// `*.cedar` files as `(file name, text)` in id order, and `entities.json` if present.
    pub fn directory(
        schema: &'a str,
        policies: &'a [(String, String)],
        entities: Option<&'a str>,
    ) -> Self {
        Self {
            schema: Source {
                name: "schema.cedarschema",
                text: schema,
            },
            policies: policies
                .iter()
                .map(|(name, text)| Source { name, text })
                .collect(),
            entities: entities.map(|text| Source {
                name: "entities.json",
                text,
            }),
        }
    }
}
