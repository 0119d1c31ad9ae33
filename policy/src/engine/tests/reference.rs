//! The engine's decisions against Cedar's own authorizer, on the whole policy set and entity
//! store: the index and the slice, stored entities below synthesized ones, attribute chains,
//! entity literals and context-only conditions.

use super::*;

/// A handful of queries, varied over every axis the policies look at.
fn queries() -> Vec<Query<'static>> {
    let principals = [
        hyperty(
            "hyperty://example.com/1",
            Some("user://idp.com/alice"),
            "example.com",
        ),
        hyperty(
            "hyperty://partner.org/1",
            Some("user://idp.com/bob"),
            "partner.org",
        ),
        hyperty("hyperty://other.net/1", None, "other.net"),
        Principal {
            address: "@carol:example.com",
            kind: PrincipalKind::User,
            runtime: None,
            user: Some("@carol:example.com"),
            domain: "example.com",
        },
        Principal {
            address: "runtime://partner.org/rt",
            kind: PrincipalKind::Runtime,
            runtime: Some("runtime://partner.org/rt"),
            user: None,
            domain: "partner.org",
        },
        Principal {
            address: "partner.org",
            kind: PrincipalKind::Domain,
            runtime: None,
            user: None,
            domain: "partner.org",
        },
    ];
    let resources = [
        target(
            "hyperty://example.com/9",
            ResourceKind::Hyperty,
            Some("user://idp.com/alice"),
            "example.com",
        ),
        target(
            "comm://example.com/chat/subscription",
            ResourceKind::Object,
            None,
            "example.com",
        ),
        target(
            "!chat:example.com",
            ResourceKind::Room,
            Some("@carol:example.com"),
            "example.com",
        ),
        target(
            "domain://msg-node.example.com/address-allocation",
            ResourceKind::Node,
            None,
            "example.com",
        ),
        target(
            "runtime://other.net/rt",
            ResourceKind::Runtime,
            None,
            "other.net",
        ),
        target(
            "domain://registry.example.com",
            ResourceKind::Domain,
            None,
            "example.com",
        ),
        // Chains that interact with the principal's: its own runtime (with another user), a
        // hyperty in its runtime, and the first principal itself.
        target(
            "runtime://x/1",
            ResourceKind::Runtime,
            Some("user://idp.com/bob"),
            "x",
        ),
        Resource {
            owner_runtime: Some("runtime://x/1"),
            ..target(
                "hyperty://example.com/8",
                ResourceKind::Hyperty,
                Some("user://idp.com/bob"),
                "example.com",
            )
        },
        target(
            "hyperty://example.com/1",
            ResourceKind::Hyperty,
            Some("user://idp.com/alice"),
            "example.com",
        ),
    ];
    let actions = [
        "create",
        "update",
        "subscribe",
        "PING",
        "matrix:join",
        "matrix:send",
        "response",
    ];
    let mut out = Vec::new();
    for (i, p) in principals.iter().enumerate() {
        for (j, r) in resources.iter().enumerate() {
            for (k, a) in actions.iter().enumerate() {
                let mut q = query(*p, a, *r);
                q.context.hour = [3, 12][(i + j + k) % 2];
                q.context.size = [10, 500][(i * j + k) % 2];
                q.context.rate_per_minute = [5, 5000][(i + k) % 2];
                out.push(q);
            }
        }
    }
    out
}

/// The reference: Cedar's own authorizer, on every policy, against the whole operator
/// store plus the request's synthesized entities, with Cedar computing the hierarchy from
/// the parents alone.
fn reference(engine: &Engine, q: &Query<'_>) -> Decision {
    use cedar_policy_core::ast;
    use std::collections::{HashMap, HashSet};
    let slot = engine.index.get(action_name(q.action)).unwrap();
    let anchors = Anchors::new(&engine.types, &engine.store, q);
    let sliced = anchors
        .entities(&engine.store, &engine.blank, [&slot.entity], [])
        .unwrap();
    let mut all: HashMap<ast::EntityUID, ast::Entity> = engine
        .store
        .iter()
        .map(|e| (e.uid().clone(), ast::Entity::clone(e)))
        .collect();
    for e in sliced.iter() {
        all.insert(e.uid().clone(), e.clone());
    }
    // Every action entity, as Cedar's authorizer sees them with a schema.
    for e in engine.index.actions.values() {
        all.insert(e.uid().clone(), ast::Entity::clone(e));
    }
    let entities = all.into_values().map(|e| {
        let attrs = e.attrs().map(|(k, v)| (k.clone(), v.clone()));
        let parents = e.parents().cloned().collect();
        let bare = ast::Entity::new_with_attr_partial_value(
            e.uid().clone(),
            attrs,
            HashSet::new(),
            parents,
            [],
        );
        cedar_policy::Entity::from(bare)
    });
    let entities = cedar_policy::Entities::from_entities(entities, None).unwrap();
    let request = cedar_policy::Request::from(ast::Request::new_unchecked(
        ast::EntityUIDEntry::known(anchors.principal().0.clone(), None),
        ast::EntityUIDEntry::known(slot.uid.clone(), None),
        ast::EntityUIDEntry::known(anchors.resource().0.clone(), None),
        Some(context(&q.context)),
    ));
    let response = cedar_policy::Authorizer::new().is_authorized(&request, &engine.all, &entities);
    let mut policies: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    policies.sort();
    let mut errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                format!("{}: {}", e.policy_id(), e.inner())
            }
        })
        .collect();
    errors.sort();
    Decision {
        allowed: response.decision() == cedar_policy::Decision::Allow,
        policies,
        errors,
    }
}

#[test]
fn the_index_and_the_slice_decide_like_cedar_on_everything() {
    let engine = engine(POLICIES, Some(ENTITIES)).unwrap();
    let (mut allowed, mut denied, mut errors) = (0, 0, 0);
    for q in queries() {
        let indexed = engine.decide(&q);
        assert_eq!(indexed, reference(&engine, &q), "{q:?}");
        // Again, with the chains cached.
        assert_eq!(engine.decide(&q), indexed, "{q:?}");
        if indexed.allowed {
            allowed += 1;
        } else {
            denied += 1;
        }
        errors += indexed.errors.len();
    }
    assert!(
        allowed > 10 && denied > 10,
        "{allowed} allowed, {denied} denied"
    );
    assert!(errors > 0);
    // The index does split: `update` sees neither the subscribe, PING nor matrix-join rules;
    // `matrix:join` sees `no-night-staff` through its group `matrix`.
    assert_eq!(engine.index.get("update").unwrap().len(), 4);
    assert_eq!(engine.index.get("matrix:join").unwrap().len(), 4);
    assert_eq!(engine.index.get("message").unwrap().len(), 4);
}

#[test]
fn stored_entities_below_synthesized_ones_inherit_their_synthesized_ancestors() {
    // An operator schema that lets a user name its hyperties: a stored hyperty in a runtime
    // that only the query knows about (and puts under its user and domain).
    let schema = SCHEMA.replace(
        "blocked?: Set<User>,",
        "blocked?: Set<User>,\n    devices?: Set<Hyperty>,",
    );
    let entities = r#"[
      {"uid": {"type": "Rethink::User", "id": "user://idp/alice"},
       "attrs": {"devices": [{"__entity": {"type": "Rethink::Hyperty", "id": "hyperty://x/h2"}}]},
       "parents": []},
      {"uid": {"type": "Rethink::Hyperty", "id": "hyperty://x/h2"},
       "attrs": {"domain": {"__entity": {"type": "Rethink::Domain", "id": "x"}}},
       "parents": [{"type": "Rethink::Runtime", "id": "runtime://x/rt"}]}
    ]"#;
    let policies = r#"@id("h2-is-alices")
        permit(principal, action, resource)
        when { Rethink::Hyperty::"hyperty://x/h2" in Rethink::User::"user://idp/alice" };"#;
    let engine = engine_with_schema(&schema, policies, Some(entities)).unwrap();
    let q = query(
        Principal {
            address: "hyperty://x/h1",
            kind: PrincipalKind::Hyperty,
            runtime: Some("runtime://x/rt"),
            user: Some("user://idp/alice"),
            domain: "x",
        },
        "create",
        target("hyperty://x/h3", ResourceKind::Hyperty, None, "x"),
    );
    let d = engine.decide(&q);
    assert_eq!(d, reference(&engine, &q));
    assert_eq!(d.policies, ["h2-is-alices"]);
    // Without the runtime in the query, h2 is not alice's.
    let q = Query {
        principal: Principal {
            runtime: None,
            ..q.principal
        },
        ..q
    };
    let d = engine.decide(&q);
    assert_eq!(d, reference(&engine, &q));
    assert!(!d.allowed);
}

#[test]
fn stored_ancestors_that_the_query_extends_pass_their_ancestors_on() {
    // The operator puts hyperty h1 in runtime rt; the query names rt as the target's runtime,
    // owned by alice: h1 is then alice's too.
    let entities = r#"[
      {"uid": {"type": "Rethink::Hyperty", "id": "hyperty://x/h1"},
       "attrs": {"domain": {"__entity": {"type": "Rethink::Domain", "id": "x"}}},
       "parents": [{"type": "Rethink::Runtime", "id": "runtime://x/rt"}]}
    ]"#;
    let policies = r#"@id("alices")
        permit(principal in Rethink::User::"user://idp/alice", action, resource);"#;
    let engine = engine(policies, Some(entities)).unwrap();
    let q = query(
        hyperty("hyperty://x/h1", None, "x"),
        "create",
        Resource {
            owner_runtime: Some("runtime://x/rt"),
            ..target(
                "hyperty://x/h3",
                ResourceKind::Hyperty,
                Some("user://idp/alice"),
                "x",
            )
        },
    );
    let d = engine.decide(&q);
    assert_eq!(d, reference(&engine, &q));
    assert_eq!(d.policies, ["alices"]);
}

/// An operator schema with entity-valued attributes that chain (`manager`, a record naming a
/// user), and policies that follow them, name entity literals and action literals: decided
/// like Cedar's authorizer on the whole store, slice or no slice.
#[test]
fn chains_literals_and_context_only_conditions_decide_like_cedar() {
    let schema = SCHEMA.replace(
        "blocked?: Set<User>,",
        "blocked?: Set<User>,\n    manager?: User,\n    desk?: {deputy: User},",
    );
    let entities = r#"[
      {"uid": {"type": "Rethink::Group", "id": "board"}, "attrs": {}, "parents": []},
      {"uid": {"type": "Rethink::User", "id": "user://idp/ceo"}, "attrs": {"idp": "idp"},
       "parents": [{"type": "Rethink::Group", "id": "board"}]},
      {"uid": {"type": "Rethink::User", "id": "user://idp/boss"},
       "attrs": {"manager": {"__entity": {"type": "Rethink::User", "id": "user://idp/ceo"}}},
       "parents": []},
      {"uid": {"type": "Rethink::User", "id": "user://idp/alice"},
       "attrs": {"manager": {"__entity": {"type": "Rethink::User", "id": "user://idp/boss"}},
                 "desk": {"deputy": {"__entity": {"type": "Rethink::User", "id": "user://idp/dan"}}}},
       "parents": []},
      {"uid": {"type": "Rethink::User", "id": "user://idp/dan"},
       "attrs": {"blocked": [{"__entity": {"type": "Rethink::User", "id": "user://idp/alice"}}]},
       "parents": []},
      {"uid": {"type": "Rethink::User", "id": "user://idp/root"},
       "attrs": {"blocked": [{"__entity": {"type": "Rethink::User", "id": "user://idp/eve"}}]},
       "parents": []}
    ]"#;
    let policies = r#"
        @id("all") permit(principal, action, resource);
        @id("grand-manager")
        forbid(principal, action == Rethink::Action::"update", resource)
        when { principal has user && principal.user has manager && principal.user.manager has manager
               && principal.user.manager.manager in Rethink::Group::"board" && context.hour < 8 };
        @id("deputy-blocks")
        forbid(principal, action == Rethink::Action::"create", resource)
        when { principal has user && principal.user has desk
               && principal.user.desk.deputy has blocked
               && principal.user.desk.deputy.blocked.contains(principal.user) };
        @id("root-blocks")
        forbid(principal, action, resource)
        when { principal has user && Rethink::User::"user://idp/root" has blocked
               && Rethink::User::"user://idp/root".blocked.contains(principal.user) };
        @id("action-literal")
        forbid(principal, action == Rethink::Action::"subscribe", resource)
        when { Rethink::Action::"subscribe" in Rethink::Action::"any" && context.size > 100 };
        @id("context-only")
        forbid(principal, action, resource)
        when { context.rate_per_minute > 1000 };
    "#;
    let engine = engine_with_schema(&schema, policies, Some(entities)).unwrap();
    let mut decided = Vec::new();
    for user in ["alice", "boss", "eve", "dan"] {
        let user = format!("user://idp/{user}");
        for action in ["update", "create", "subscribe", "read"] {
            for (hour, size, rate) in [(3, 10, 5), (12, 500, 5000)] {
                let mut q = query(
                    hyperty("hyperty://x/1", Some(&user), "x"),
                    action,
                    target("hyperty://x/2", ResourceKind::Hyperty, None, "x"),
                );
                q.context.hour = hour;
                q.context.size = size;
                q.context.rate_per_minute = rate;
                let d = engine.decide(&q);
                assert_eq!(d, reference(&engine, &q), "{q:?}");
                decided.extend(d.policies);
            }
        }
    }
    for id in [
        "all",
        "grand-manager",
        "deputy-blocks",
        "root-blocks",
        "action-literal",
        "context-only",
    ] {
        assert!(decided.iter().any(|p| p == id), "{id} never decided");
    }
}
