//! Parsing the policy files and giving every policy its id: its `@id("...")` annotation, or
//! `<file name>#<index in file>`. Duplicate ids are refused, naming both files.

use crate::error::PolicyError;
use crate::sources::Source;
use crate::span::{describe, offset, position};
use cedar_policy::{PolicyId, PolicySet};
use std::collections::HashMap;
use std::str::FromStr;

/// Every policy of a directory under its final id, and the file each id came from.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) set: PolicySet,
    /// Policy id → index of its file in the `policies` sources.
    pub(crate) origin: HashMap<PolicyId, usize>,
}

/// Parses `files` into one policy set with final ids.
pub(crate) fn parse(files: &[Source<'_>]) -> Result<Parsed, PolicyError> {
    let mut set = PolicySet::new();
    let mut origin: HashMap<PolicyId, usize> = HashMap::new();
    for (file_index, file) in files.iter().enumerate() {
        let parsed = PolicySet::from_str(file.text).map_err(|e| {
            let at = position(file.text, offset(&e).unwrap_or(0));
            PolicyError::Parse {
                file: file.name.to_owned(),
                line: at.line,
                col: at.col,
                message: describe(&e),
            }
        })?;
        if let Some(template) = parsed.templates().next() {
            let at = position(file.text, locate(file.text, &template.to_string()));
            return Err(PolicyError::Parse {
                file: file.name.to_owned(),
                line: at.line,
                col: at.col,
                message: "templates (policies with `?principal` or `?resource` slots) are not \
                          supported"
                    .to_owned(),
            });
        }
        // Cedar names the policies of one text `policy0`, `policy1`, ... in order.
        let mut policies: Vec<_> = parsed
            .policies()
            .map(|p| (index_in_file(p.id()), p))
            .collect();
        policies.sort_by_key(|(index, _)| *index);
        for (index, policy) in policies {
            let id = match policy.annotation("id") {
                Some(id) if !id.is_empty() => id.to_owned(),
                _ => format!("{}#{index}", file.name),
            };
            let id = PolicyId::new(id);
            if let Some(&first) = origin.get(&id) {
                return Err(PolicyError::DuplicateId {
                    id: id.to_string(),
                    first: files[first].name.to_owned(),
                    second: file.name.to_owned(),
                });
            }
            // Ids were checked just above, so Cedar has no reason to refuse this.
            set.add(policy.new_id(id.clone()))
                .map_err(|_| PolicyError::DuplicateId {
                    id: id.to_string(),
                    first: file.name.to_owned(),
                    second: file.name.to_owned(),
                })?;
            origin.insert(id, file_index);
        }
    }
    Ok(Parsed { set, origin })
}

/// The byte offset of a policy's own text in its file (0 if not found).
pub(crate) fn locate(file_text: &str, policy_text: &str) -> usize {
    file_text.find(policy_text.trim()).unwrap_or(0)
}

fn index_in_file(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src<'a>(name: &'a str, text: &'a str) -> Source<'a> {
        Source { name, text }
    }

    fn ids(parsed: &Parsed) -> Vec<String> {
        let mut ids: Vec<_> = parsed.set.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn ids_come_from_annotations_or_file_and_index() {
        let a = "permit(principal, action, resource);\n\
                 @id(\"named\") forbid(principal, action, resource);\n\
                 permit(principal, action, resource) when { context.size > 3 };";
        let b = "permit(principal, action, resource);";
        let parsed = parse(&[src("a.cedar", a), src("b.cedar", b)]).unwrap();
        assert_eq!(
            ids(&parsed),
            ["a.cedar#0", "a.cedar#2", "b.cedar#0", "named"]
        );
        assert_eq!(parsed.origin[&PolicyId::new("b.cedar#0")], 1);
        assert_eq!(parsed.origin[&PolicyId::new("named")], 0);
    }

    #[test]
    fn parse_error_names_file_line_and_column() {
        let text = "permit(principal, action, resource);\n\npermit(principal, action, resource) when { context.hour > };\n";
        let err = parse(&[src("policies.cedar", text)]).unwrap_err();
        let PolicyError::Parse {
            file,
            line,
            col,
            message,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(file, "policies.cedar");
        assert_eq!(*line, 3);
        assert!(*col > 1, "{err}");
        assert!(!message.is_empty());
        assert!(err.to_string().starts_with("policies.cedar:3:"), "{err}");
    }

    #[test]
    fn duplicate_ids_name_both_files() {
        let a = "@id(\"x\") permit(principal, action, resource);";
        let b = "\n@id(\"x\") forbid(principal, action, resource);";
        let err = parse(&[src("a.cedar", a), src("b.cedar", b)]).unwrap_err();
        assert_eq!(
            err,
            PolicyError::DuplicateId {
                id: "x".into(),
                first: "a.cedar".into(),
                second: "b.cedar".into()
            }
        );
        let same = "@id(\"y\") permit(principal, action, resource);\n@id(\"y\") permit(principal, action, resource);";
        let err = parse(&[src("c.cedar", same)]).unwrap_err();
        assert!(
            matches!(err, PolicyError::DuplicateId { ref first, ref second, .. } if first == "c.cedar" && second == "c.cedar")
        );
    }

    #[test]
    fn templates_are_refused() {
        let text = "permit(principal, action, resource);\npermit(principal == ?principal, action, resource);";
        let err = parse(&[src("t.cedar", text)]).unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::Parse {
                    line: 2,
                    col: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
