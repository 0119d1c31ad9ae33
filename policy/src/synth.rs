//! The entities a query implies: the principal (typed by its kind, uid = its address) with its
//! runtime, user and domain as parents and attributes; the resource likewise (an object by its
//! base address, with its owner); and the runtime, user and domain entities they refer to.
//! An entity named twice (a user who is both the sender and the owner) is synthesized once.

use crate::address::object_base;
use crate::names::{Types, uid};
use crate::query::{Principal, PrincipalKind, Query, Resource, ResourceKind};
use cedar_policy_core::ast::EntityUID;

/// An entity synthesized from the query: every attribute names an entity.
#[derive(Debug, Clone)]
pub(crate) struct Synth {
    pub(crate) uid: EntityUID,
    pub(crate) attrs: Vec<(&'static str, EntityUID)>,
    pub(crate) parents: Vec<EntityUID>,
}

/// The synthesized entities of one query, and which of them are the principal and resource.
#[derive(Debug, Default, Clone)]
pub(crate) struct Synthesized {
    pub(crate) items: Vec<Synth>,
    pub(crate) principal: usize,
    pub(crate) resource: usize,
}

/// Synthesizes the entities `query` implies.
pub(crate) fn synthesize(types: &Types, query: &Query<'_>) -> Synthesized {
    let mut synth = Synthesized::default();
    synth.principal = synth.add_principal(types, &query.principal);
    synth.resource = synth.add_resource(types, &query.resource);
    synth
}

/// Synthesizes the entities the principal alone implies (`principal` and `resource` are both
/// the principal's index).
pub(crate) fn synthesize_principal(types: &Types, principal: &Principal<'_>) -> Synthesized {
    let mut synth = Synthesized::default();
    synth.principal = synth.add_principal(types, principal);
    synth.resource = synth.principal;
    synth
}

/// Synthesizes the entities the resource alone implies (`principal` and `resource` are both
/// the resource's index).
pub(crate) fn synthesize_resource(types: &Types, resource: &Resource<'_>) -> Synthesized {
    let mut synth = Synthesized::default();
    synth.resource = synth.add_resource(types, resource);
    synth.principal = synth.resource;
    synth
}

impl Synthesized {
    /// The index of `uid`, if it is synthesized.
    pub(crate) fn position(&self, uid: &EntityUID) -> Option<usize> {
        self.items.iter().position(|s| s.uid == *uid)
    }

    /// Adds an entity, or merges parents and missing attributes into the one of that uid.
    fn add(
        &mut self,
        uid: EntityUID,
        attrs: Vec<(&'static str, EntityUID)>,
        parents: Vec<EntityUID>,
    ) -> usize {
        let parents = parents.into_iter().filter(|p| *p != uid);
        match self.position(&uid) {
            Some(i) => {
                let existing = &mut self.items[i];
                for parent in parents {
                    if !existing.parents.contains(&parent) {
                        existing.parents.push(parent);
                    }
                }
                for (name, value) in attrs {
                    if !existing.attrs.iter().any(|(n, _)| *n == name) {
                        existing.attrs.push((name, value));
                    }
                }
                i
            }
            None => {
                let parents = parents.collect();
                self.items.push(Synth {
                    uid,
                    attrs,
                    parents,
                });
                self.items.len() - 1
            }
        }
    }

    /// A runtime: `domain`, optional `user`, member of both.
    fn runtime(
        &mut self,
        runtime: EntityUID,
        user: Option<&EntityUID>,
        domain: &EntityUID,
    ) -> usize {
        let mut attrs = vec![("domain", domain.clone())];
        let mut parents = Vec::with_capacity(2);
        if let Some(user) = user {
            attrs.push(("user", user.clone()));
            parents.push(user.clone());
        }
        parents.push(domain.clone());
        self.add(runtime, attrs, parents)
    }

    /// A hyperty: `domain`, optional `runtime` and `user`, member of all three.
    fn hyperty(
        &mut self,
        hyperty: EntityUID,
        runtime: Option<&EntityUID>,
        user: Option<&EntityUID>,
        domain: &EntityUID,
    ) -> usize {
        let mut attrs = vec![("domain", domain.clone())];
        let mut parents = Vec::with_capacity(3);
        if let Some(runtime) = runtime {
            attrs.push(("runtime", runtime.clone()));
            parents.push(runtime.clone());
        }
        if let Some(user) = user {
            attrs.push(("user", user.clone()));
            parents.push(user.clone());
        }
        parents.push(domain.clone());
        self.add(hyperty, attrs, parents)
    }

    /// An entity with no synthesized attributes or parents (a user, a domain).
    fn plain(&mut self, uid: EntityUID) -> usize {
        self.add(uid, Vec::new(), Vec::new())
    }

    fn add_principal(&mut self, types: &Types, p: &Principal<'_>) -> usize {
        let domain = uid(&types.domain, p.domain);
        let user = p.user.map(|u| uid(&types.user, u));
        let principal = match p.kind {
            PrincipalKind::Hyperty => {
                let runtime = p.runtime.map(|r| uid(&types.runtime, r));
                let me = self.hyperty(
                    uid(&types.hyperty, p.address),
                    runtime.as_ref(),
                    user.as_ref(),
                    &domain,
                );
                if let Some(runtime) = runtime {
                    self.runtime(runtime, user.as_ref(), &domain);
                }
                me
            }
            // A path below the runtime URL is an entity of its own: the schema has no runtime
            // inside a runtime.
            PrincipalKind::Runtime => {
                self.runtime(uid(&types.runtime, p.address), user.as_ref(), &domain)
            }
            PrincipalKind::User => self.plain(uid(&types.user, p.address)),
            PrincipalKind::Domain => self.plain(uid(&types.domain, p.address)),
        };
        if let Some(user) = user {
            self.plain(user);
        }
        self.plain(domain);
        principal
    }

    fn add_resource(&mut self, types: &Types, r: &Resource<'_>) -> usize {
        let domain = uid(&types.domain, r.domain);
        let user = r.owner_user.map(|u| uid(&types.user, u));
        let resource = match r.kind {
            ResourceKind::Hyperty => {
                let runtime = r.owner_runtime.map(|rt| uid(&types.runtime, rt));
                let me = self.hyperty(
                    uid(&types.hyperty, r.address),
                    runtime.as_ref(),
                    user.as_ref(),
                    &domain,
                );
                if let Some(runtime) = runtime {
                    self.runtime(runtime, user.as_ref(), &domain);
                }
                me
            }
            ResourceKind::Runtime => {
                self.runtime(uid(&types.runtime, r.address), user.as_ref(), &domain)
            }
            ResourceKind::Object | ResourceKind::Room => {
                let attrs = user.iter().map(|u| ("owner", u.clone())).collect();
                let me = uid(&types.object, object_base(r.address));
                self.add(me, attrs, vec![domain.clone()])
            }
            ResourceKind::Domain => self.plain(uid(&types.domain, r.address)),
            ResourceKind::Node => self.add(
                uid(&types.node, r.address),
                Vec::new(),
                vec![domain.clone()],
            ),
        };
        if let Some(user) = user {
            self.plain(user);
        }
        self.plain(domain);
        resource
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Facts;

    fn query<'a>(principal: Principal<'a>, resource: Resource<'a>) -> Query<'a> {
        Query {
            principal,
            action: "create",
            resource,
            context: Facts::default(),
        }
    }

    fn names(synth: &Synthesized, i: usize) -> (String, Vec<String>, Vec<String>) {
        let item = &synth.items[i];
        (
            item.uid.to_string(),
            item.parents.iter().map(ToString::to_string).collect(),
            item.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )
    }

    #[test]
    fn hyperty_to_hyperty_chains() {
        let q = query(
            Principal {
                address: "hyperty://a.com/1",
                kind: PrincipalKind::Hyperty,
                runtime: Some("runtime://a.com/rt"),
                user: Some("user://idp/alice"),
                domain: "a.com",
            },
            Resource {
                address: "hyperty://a.com/2",
                kind: ResourceKind::Hyperty,
                owner_user: Some("user://idp/alice"),
                owner_runtime: None,
                domain: "a.com",
            },
        );
        let s = synthesize(&Types::new(), &q);
        let uids: Vec<String> = s.items.iter().map(|i| i.uid.to_string()).collect();
        assert_eq!(
            uids,
            [
                r#"Rethink::Hyperty::"hyperty://a.com/1""#,
                r#"Rethink::Runtime::"runtime://a.com/rt""#,
                r#"Rethink::User::"user://idp/alice""#,
                r#"Rethink::Domain::"a.com""#,
                r#"Rethink::Hyperty::"hyperty://a.com/2""#,
            ]
        );
        assert_eq!((s.principal, s.resource), (0, 4));
        let (_, parents, attrs) = names(&s, 0);
        assert_eq!(parents.len(), 3);
        assert_eq!(attrs.len(), 3);
        let (_, parents, attrs) = names(&s, 1);
        assert_eq!(
            parents,
            [
                r#"Rethink::User::"user://idp/alice""#,
                r#"Rethink::Domain::"a.com""#
            ]
        );
        assert_eq!(attrs.len(), 2);
        let (_, parents, attrs) = names(&s, 4);
        assert_eq!(
            parents,
            [
                r#"Rethink::User::"user://idp/alice""#,
                r#"Rethink::Domain::"a.com""#
            ]
        );
        assert_eq!(
            attrs,
            [
                r#"domain=Rethink::Domain::"a.com""#,
                r#"user=Rethink::User::"user://idp/alice""#
            ]
        );
    }

    #[test]
    fn objects_use_their_base_address_and_domains_are_not_their_own_parent() {
        let q = query(
            Principal {
                address: "a.com",
                kind: PrincipalKind::Domain,
                runtime: None,
                user: None,
                domain: "a.com",
            },
            Resource {
                address: "comm://a.com/chat/children/msgs",
                kind: ResourceKind::Object,
                owner_user: Some("user://idp/bob"),
                owner_runtime: Some("runtime://a.com/x"),
                domain: "a.com",
            },
        );
        let s = synthesize(&Types::new(), &q);
        assert_eq!(
            names(&s, s.principal),
            (r#"Rethink::Domain::"a.com""#.to_owned(), vec![], vec![])
        );
        let (uid, parents, attrs) = names(&s, s.resource);
        assert_eq!(uid, r#"Rethink::Object::"comm://a.com/chat""#);
        assert_eq!(parents, [r#"Rethink::Domain::"a.com""#]);
        assert_eq!(attrs, [r#"owner=Rethink::User::"user://idp/bob""#]);
        assert_eq!(s.items.len(), 3);
    }
}
