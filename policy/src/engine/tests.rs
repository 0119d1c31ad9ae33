//! Tests of the engine: loading errors and decisions. The comparisons with Cedar's own
//! authorizer are in `reference.rs`.
use super::*;
use crate::context::context;
use crate::query::{Facts, Principal, PrincipalKind, Resource, ResourceKind};

mod reference;

const POLICIES: &str = r#"
@id("allow-intra")
permit(principal, action in Rethink::Action::"rethink", resource)
when { context.from_domain == context.to_domain };

@id("partners")
permit(principal in Rethink::Group::"partners", action, resource);

permit(principal, action == Rethink::Action::"subscribe", resource is Rethink::Object)
when { principal has user && resource has allowed && resource.allowed.contains(principal.user) };

@id("ping-only-small")
forbid(principal, action == Rethink::Action::"message", resource)
when { context.message_type == "PING" && context.size > 100 };

@id("no-night-staff")
forbid(principal, action in [Rethink::Action::"update", Rethink::Action::"matrix"], resource in Rethink::Group::"staff")
when { context.hour < 8 };

@id("matrix-join")
permit(principal is Rethink::User, action == Rethink::Action::"matrix:join", resource is Rethink::Object)
when { resource has owner && resource.owner == principal };

@id("err")
forbid(principal, action, resource is Rethink::Hyperty)
when { context.rate_per_minute > 1000 && context.rate_per_minute + 9223372036854775000 > 0 };
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "Rethink::Group", "id": "partners"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Rethink::Group", "id": "staff"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Rethink::Domain", "id": "partner.org"}, "attrs": {},
   "parents": [{"type": "Rethink::Group", "id": "partners"}]},
  {"uid": {"type": "Rethink::User", "id": "user://idp.com/alice"}, "attrs": {"idp": "idp.com"},
   "parents": [{"type": "Rethink::Group", "id": "staff"}]},
  {"uid": {"type": "Rethink::User", "id": "@carol:example.com"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Rethink::Object", "id": "comm://example.com/chat"},
   "attrs": {"owner": {"__entity": {"type": "Rethink::User", "id": "@carol:example.com"}},
         "allowed": [{"__entity": {"type": "Rethink::User", "id": "user://idp.com/bob"}}]},
   "parents": []}
]"#;

fn engine(policies: &str, entities: Option<&str>) -> Result<Engine, PolicyError> {
    engine_with_schema(SCHEMA, policies, entities)
}

fn engine_with_schema(
    schema: &str,
    policies: &str,
    entities: Option<&str>,
) -> Result<Engine, PolicyError> {
    Engine::load(&Sources {
        schema: Source {
            name: "schema.cedarschema",
            text: schema,
        },
        policies: vec![Source {
            name: "policies.cedar",
            text: policies,
        }],
        entities: entities.map(|text| Source {
            name: "entities.json",
            text,
        }),
    })
}

fn hyperty<'a>(address: &'a str, user: Option<&'a str>, domain: &'a str) -> Principal<'a> {
    Principal {
        address,
        kind: PrincipalKind::Hyperty,
        runtime: Some("runtime://x/1"),
        user,
        domain,
    }
}

fn query<'a>(principal: Principal<'a>, action: &'a str, resource: Resource<'a>) -> Query<'a> {
    Query {
        principal,
        action,
        resource,
        context: Facts {
            hour: 12,
            message_type: action,
            from_domain: principal.domain,
            to_domain: resource.domain,
            ..Facts::default()
        },
    }
}

fn target<'a>(
    address: &'a str,
    kind: ResourceKind,
    owner: Option<&'a str>,
    domain: &'a str,
) -> Resource<'a> {
    Resource {
        address,
        kind,
        owner_user: owner,
        owner_runtime: None,
        domain,
    }
}

#[test]
fn allow_all_allows_and_names_its_policy() {
    let engine = Engine::allow_all();
    assert_eq!(engine.policy_count(), 1);
    let q = query(
        hyperty("hyperty://a.com/1", None, "a.com"),
        "PING",
        target("hyperty://b.com/2", ResourceKind::Hyperty, None, "b.com"),
    );
    let d = engine.decide(&q);
    assert!(d.allowed);
    assert_eq!(d.policies, ["default-allow"]);
    assert!(d.errors.is_empty());
}

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
}

#[test]
fn validation_error_names_file_and_policy() {
    let text = "permit(principal, action, resource);\n\n@id(\"typo\")\npermit(principal, action, resource)\n  when { context.hou > 3 };\n";
    let err = engine(text, None).unwrap_err();
    let PolicyError::Validation {
        file,
        line,
        col,
        policy,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(file, "policies.cedar");
    assert_eq!(policy, "typo");
    assert_eq!((*line, *col), (5, 10), "{err}");
    assert!(message.contains("hou"), "{err}");
    assert!(
        err.to_string()
            .starts_with("policies.cedar:5:10: policy \"typo\""),
        "{err}"
    );
    assert!(!message.starts_with("for policy"), "{err}");
}

#[test]
fn validation_error_without_id_uses_file_and_index() {
    let text = "permit(principal, action, resource);\npermit(principal, action, resource is Rethink::Nope);\n";
    let err = engine(text, None).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Validation { policy, line: 2, .. } if policy == "policies.cedar#1"),
        "{err}"
    );
}

#[test]
fn entities_violating_the_schema_are_refused() {
    let bad =
        r#"[{"uid": {"type": "Rethink::User", "id": "u"}, "attrs": {"idp": 3}, "parents": []}]"#;
    let err = engine("permit(principal, action, resource);", Some(bad)).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Entities { file, .. } if file == "entities.json"),
        "{err}"
    );
    let unknown = r#"[{"uid": {"type": "Rethink::Nope", "id": "u"}, "attrs": {}, "parents": []}]"#;
    assert!(matches!(
        engine("permit(principal, action, resource);", Some(unknown)),
        Err(PolicyError::Entities { .. })
    ));
    let bad_parent = r#"[{"uid": {"type": "Rethink::Group", "id": "g"}, "attrs": {},
        "parents": [{"type": "Rethink::User", "id": "u"}]}]"#;
    assert!(matches!(
        engine("permit(principal, action, resource);", Some(bad_parent)),
        Err(PolicyError::Entities { .. })
    ));
    assert!(engine(POLICIES, Some(ENTITIES)).is_ok());
}

#[test]
fn schema_errors_name_the_file() {
    let sources = Sources {
        schema: Source {
            name: "schema.cedarschema",
            text: "namespace Rethink { entity User; }",
        },
        policies: Vec::new(),
        entities: None,
    };
    let err = Engine::load(&sources).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Schema { message, .. } if message.contains("Rethink::Group")),
        "{err}"
    );
    let sources = Sources {
        schema: Source {
            name: "schema.cedarschema",
            text: "namespace Rethink {\n  entity User in [;\n}",
        },
        ..sources
    };
    let err = Engine::load(&sources).unwrap_err();
    assert!(
        err.to_string().starts_with("schema.cedarschema: line 2"),
        "{err}"
    );
}

#[test]
fn custom_types_are_decided_as_message() {
    let engine = engine(POLICIES, Some(ENTITIES)).unwrap();
    let mut q = query(
        hyperty("hyperty://example.com/1", None, "example.com"),
        "PING",
        target(
            "hyperty://example.com/2",
            ResourceKind::Hyperty,
            None,
            "example.com",
        ),
    );
    let d = engine.decide(&q);
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policies, ["allow-intra"]);
    q.context.size = 500;
    let d = engine.decide(&q);
    assert!(!d.allowed);
    assert_eq!(d.policies, ["ping-only-small"]);
    // Another custom type is not caught by the PING rule.
    q.action = "PONG";
    q.context.message_type = "PONG";
    assert!(engine.decide(&q).allowed);
}

#[test]
fn unknown_matrix_actions_are_denied_with_an_error() {
    let engine = Engine::allow_all();
    let q = query(
        hyperty("hyperty://a.com/1", None, "a.com"),
        "matrix:nope",
        target("!r:a.com", ResourceKind::Room, None, "a.com"),
    );
    let d = engine.decide(&q);
    assert!(!d.allowed);
    assert!(d.policies.is_empty());
    assert_eq!(d.errors.len(), 1);
}

#[test]
fn scopes_prune_candidates() {
    let engine = engine(POLICIES, Some(ENTITIES)).unwrap();
    let q = query(
        hyperty("hyperty://other.net/1", None, "other.net"),
        "update",
        target(
            "hyperty://other.net/2",
            ResourceKind::Hyperty,
            None,
            "other.net",
        ),
    );
    let slot = engine.index.get("update").unwrap();
    let anchors = Anchors::new(&engine.types, &engine.store, &q);
    let mut candidates = Vec::new();
    slot.candidates(
        &engine.index.policies,
        anchors.principal(),
        anchors.resource(),
        &mut candidates,
    );
    let ids: Vec<&str> = candidates
        .iter()
        .map(|&i| engine.index.policies[i].id.as_str())
        .collect();
    // Not `partners` (principal not in the group) nor `no-night-staff` (resource not staff).
    assert_eq!(ids, ["allow-intra", "err"]);
}

#[test]
fn decisions_use_groups_owners_and_derived_object_addresses() {
    let engine = engine(POLICIES, Some(ENTITIES)).unwrap();
    // A partner domain's hyperty: allowed through the group its domain is in.
    let q = query(
        hyperty("hyperty://partner.org/1", None, "partner.org"),
        "create",
        target(
            "hyperty://example.com/9",
            ResourceKind::Hyperty,
            None,
            "example.com",
        ),
    );
    assert_eq!(engine.decide(&q).policies, ["partners"]);
    // bob may subscribe to the chat he is allowed on, through its /subscription address.
    let q = query(
        hyperty(
            "hyperty://other.net/1",
            Some("user://idp.com/bob"),
            "other.net",
        ),
        "subscribe",
        target(
            "comm://example.com/chat/subscription",
            ResourceKind::Object,
            None,
            "example.com",
        ),
    );
    assert_eq!(engine.decide(&q).policies, ["policies.cedar#2"]);
    // ... and not through another object.
    let q = Query {
        resource: target(
            "comm://example.com/other/changes",
            ResourceKind::Object,
            None,
            "example.com",
        ),
        ..q
    };
    let d = engine.decide(&q);
    assert!(!d.allowed && d.policies.is_empty(), "{d:?}");
    // At night, updates to staff hyperties (alice owns the target) are forbidden.
    let mut q = query(
        hyperty("hyperty://example.com/1", None, "example.com"),
        "update",
        target(
            "hyperty://example.com/9",
            ResourceKind::Hyperty,
            Some("user://idp.com/alice"),
            "example.com",
        ),
    );
    q.context.hour = 3;
    assert_eq!(engine.decide(&q).policies, ["no-night-staff"]);
    // The room's owner (from the store, not from the query) may join it.
    let carol = Principal {
        address: "@carol:example.com",
        kind: PrincipalKind::User,
        runtime: None,
        user: Some("@carol:example.com"),
        domain: "example.com",
    };
    let q = query(
        carol,
        "matrix:join",
        target(
            "comm://example.com/chat",
            ResourceKind::Room,
            None,
            "example.com",
        ),
    );
    assert_eq!(engine.decide(&q).policies, ["matrix-join"]);
}

#[test]
fn evaluation_errors_name_the_policy() {
    let engine = engine(POLICIES, Some(ENTITIES)).unwrap();
    // `err` overflows when the rate is above 807: an evaluation error.
    let mut q = query(
        hyperty("hyperty://example.com/1", None, "example.com"),
        "create",
        target(
            "hyperty://example.com/9",
            ResourceKind::Hyperty,
            None,
            "example.com",
        ),
    );
    q.context.rate_per_minute = 5000;
    let d = engine.decide(&q);
    assert!(d.allowed, "an erroring forbid is skipped: {d:?}");
    assert_eq!(d.errors.len(), 1, "{d:?}");
    assert!(d.errors[0].starts_with("err: "), "{d:?}");
}

#[test]
fn errors_point_into_the_right_file() {
    let load = |a: &str, b: &str| {
        Engine::load(&Sources {
            schema: Source {
                name: "schema.cedarschema",
                text: SCHEMA,
            },
            policies: vec![
                Source {
                    name: "a.cedar",
                    text: a,
                },
                Source {
                    name: "b.cedar",
                    text: b,
                },
            ],
            entities: None,
        })
    };
    let good = "permit(principal, action, resource);\n";
    let err = load(
        good,
        "\n\nforbid(principal, action, resource)\n  when { resource.domian == principal };\n",
    )
    .unwrap_err();
    assert_eq!(
        (err.to_string().split(':').take(3).collect::<Vec<_>>()),
        ["b.cedar", "4", "10"],
        "{err}"
    );
    assert!(matches!(&err, PolicyError::Validation { policy, .. } if policy == "b.cedar#0"));
    let err = load(
        good,
        "permit(principal, action, resource) when { context.size > \"x\" };",
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("b.cedar:1:"), "{err}");
    let err = load("permit(principal, action, resource)\n", good).unwrap_err();
    assert!(err.to_string().starts_with("a.cedar:"), "{err}");
    let err = load(
        good,
        "permit(principal, action == Rethink::Action::\"fly\", resource);",
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("b.cedar:1:"), "{err}");
}
