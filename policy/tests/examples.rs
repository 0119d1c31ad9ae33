#![allow(clippy::unwrap_used)]
//! The shipped example policy directories (`policy/examples/*`): each loads as a directory
//! would, allows what its README says and denies the rest, naming the forbidding policy.

use rethink_policy::{
    Decision, Engine, Facts, Principal, PrincipalKind, Query, Resource, ResourceKind, SCHEMA,
    Sources,
};
use std::fs;
use std::path::{Path, PathBuf};

const EXAMPLES: [&str; 7] = [
    "intra-domain",
    "listed-domains",
    "working-hours",
    "blocklist",
    "object-owner",
    "rate-limit",
    "anonymous",
];

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// The files of a policy directory: (name, text), schema first, then `*.cedar` sorted, then
/// `entities.json`.
fn files(name: &str) -> (String, Vec<(String, String)>, Option<String>) {
    let dir = dir(name);
    let schema = fs::read_to_string(dir.join("schema.cedarschema")).unwrap();
    let mut policies: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).unwrap())
        })
        .collect();
    policies.sort();
    let entities = fs::read_to_string(dir.join("entities.json")).ok();
    (schema, policies, entities)
}

fn load(name: &str) -> Engine {
    let (schema, policies, entities) = files(name);
    let sources = Sources::directory(&schema, &policies, entities.as_deref());
    Engine::load(&sources).unwrap_or_else(|e| panic!("example {name}: {e}"))
}

fn hyperty<'a>(address: &'a str, user: Option<&'a str>, domain: &'a str) -> Principal<'a> {
    Principal {
        address,
        kind: PrincipalKind::Hyperty,
        runtime: Some("runtime://example.com/rt-1"),
        user,
        domain,
    }
}

fn to_hyperty<'a>(address: &'a str, owner: Option<&'a str>, domain: &'a str) -> Resource<'a> {
    Resource {
        address,
        kind: ResourceKind::Hyperty,
        owner_user: owner,
        owner_runtime: Some("runtime://example.com/rt-2"),
        domain,
    }
}

/// A query with the context a node would compute (Wednesday noon, authenticated).
fn query<'a>(principal: Principal<'a>, action: &'a str, resource: Resource<'a>) -> Query<'a> {
    Query {
        principal,
        action,
        resource,
        context: Facts {
            time: 1_767_700_800,
            weekday: 2,
            hour: 12,
            transport: "ws",
            message_type: action,
            from: principal.address,
            to: resource.address,
            from_scheme: principal.address.split("://").next().unwrap(),
            to_scheme: resource.address.split("://").next().unwrap(),
            from_domain: principal.domain,
            to_domain: resource.domain,
            size: 200,
            authenticated: principal.user.is_some(),
            idp: "",
            rate_per_minute: 3,
            allocations: 1,
        },
    }
}

#[track_caller]
fn allowed(decision: &Decision) {
    assert!(decision.allowed, "expected an allow: {decision:?}");
    assert_eq!(decision.policies, ["allow-all"]);
    assert!(decision.errors.is_empty(), "{decision:?}");
}

#[track_caller]
fn denied_by(decision: &Decision, id: &str) {
    assert!(!decision.allowed, "expected a denial: {decision:?}");
    assert_eq!(decision.policies, [id]);
    assert!(decision.errors.is_empty(), "{decision:?}");
}

#[test]
fn every_example_is_a_complete_directory_with_the_canonical_schema() {
    for name in EXAMPLES {
        let (schema, policies, entities) = files(name);
        assert_eq!(
            schema, SCHEMA,
            "{name}/schema.cedarschema differs from the canonical one"
        );
        assert!(!policies.is_empty(), "{name} has no *.cedar");
        assert!(entities.is_some(), "{name} has no entities.json");
        assert!(
            dir(name).join("README.md").is_file(),
            "{name} has no README.md"
        );
        assert!(load(name).policy_count() > 0);
    }
    // No example directory is left untested.
    let mut listed: Vec<_> = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let mut known = EXAMPLES.to_vec();
    known.sort();
    assert_eq!(listed, known);
}

#[test]
fn intra_domain() {
    let engine = load("intra-domain");
    let q = query(
        hyperty(
            "hyperty://example.com/a",
            Some("user://example.com/alice"),
            "example.com",
        ),
        "create",
        to_hyperty("hyperty://example.com/b", None, "example.com"),
    );
    allowed(&engine.decide(&q));
    let q = query(
        hyperty(
            "hyperty://other.net/a",
            Some("user://other.net/eve"),
            "other.net",
        ),
        "create",
        to_hyperty("hyperty://example.com/b", None, "example.com"),
    );
    denied_by(&engine.decide(&q), "cross-domain");
    // Custom types too.
    let q = Query {
        action: "PING",
        ..q
    };
    denied_by(&engine.decide(&q), "cross-domain");
}

#[test]
fn listed_domains() {
    let engine = load("listed-domains");
    let to_home = to_hyperty("hyperty://example.com/b", None, "example.com");
    for (sender, domain) in [
        ("hyperty://example.com/a", "example.com"),
        ("hyperty://partner.org/a", "partner.org"),
        ("hyperty://friends.net/a", "friends.net"),
    ] {
        let q = query(hyperty(sender, None, domain), "update", to_home);
        allowed(&engine.decide(&q));
    }
    let q = query(
        hyperty("hyperty://other.net/a", None, "other.net"),
        "update",
        to_home,
    );
    denied_by(&engine.decide(&q), "partners-only");
    // A partner's runtime is in its domain too.
    let runtime = Principal {
        address: "runtime://partner.org/rt",
        kind: PrincipalKind::Runtime,
        runtime: Some("runtime://partner.org/rt"),
        user: None,
        domain: "partner.org",
    };
    allowed(&engine.decide(&query(runtime, "read", to_home)));
    // Traffic to other domains is not this policy's business.
    let q = query(
        hyperty("hyperty://other.net/a", None, "other.net"),
        "update",
        to_hyperty("hyperty://third.org/b", None, "third.org"),
    );
    allowed(&engine.decide(&q));
}

#[test]
fn working_hours() {
    let engine = load("working-hours");
    let sender = hyperty(
        "hyperty://example.com/x",
        Some("user://example.com/bob"),
        "example.com",
    );
    let to_alice = to_hyperty(
        "hyperty://example.com/alice-1",
        Some("user://example.com/alice"),
        "example.com",
    );
    let to_bob = to_hyperty(
        "hyperty://example.com/bob-1",
        Some("user://example.com/bob"),
        "example.com",
    );
    allowed(&engine.decide(&query(sender, "update", to_alice)));
    for (weekday, hour) in [(2, 7), (2, 18), (2, 23), (5, 12), (6, 10)] {
        let mut q = query(sender, "update", to_alice);
        q.context.weekday = weekday;
        q.context.hour = hour;
        denied_by(&engine.decide(&q), "staff-off-hours");
        // bob is not staff.
        q.resource = to_bob;
        allowed(&engine.decide(&q));
    }
    let mut q = query(sender, "update", to_alice);
    (q.context.weekday, q.context.hour) = (4, 8);
    allowed(&engine.decide(&q));
}

#[test]
fn blocklist() {
    let engine = load("blocklist");
    let to_alice = to_hyperty(
        "hyperty://example.com/alice-1",
        Some("user://example.com/alice"),
        "example.com",
    );
    let bob = hyperty(
        "hyperty://example.com/bob-1",
        Some("user://example.com/bob"),
        "example.com",
    );
    let mallory = hyperty(
        "hyperty://example.com/m-1",
        Some("user://example.com/mallory"),
        "example.com",
    );
    allowed(&engine.decide(&query(bob, "create", to_alice)));
    denied_by(
        &engine.decide(&query(mallory, "create", to_alice)),
        "blocked-sender",
    );
    denied_by(
        &engine.decide(&query(mallory, "PING", to_alice)),
        "blocked-sender",
    );
    // mallory as a Matrix-style user principal.
    let mallory_user = Principal {
        address: "user://example.com/mallory",
        kind: PrincipalKind::User,
        runtime: None,
        user: Some("user://example.com/mallory"),
        domain: "example.com",
    };
    denied_by(
        &engine.decide(&query(mallory_user, "create", to_alice)),
        "blocked-sender",
    );
    // The block is alice's: mallory can still reach bob.
    let to_bob = to_hyperty(
        "hyperty://example.com/bob-1",
        Some("user://example.com/bob"),
        "example.com",
    );
    allowed(&engine.decide(&query(mallory, "create", to_bob)));
}

#[test]
fn object_owner() {
    let engine = load("object-owner");
    let object = |address| Resource {
        address,
        kind: ResourceKind::Object,
        owner_user: None,
        owner_runtime: None,
        domain: "example.com",
    };
    let alice = hyperty(
        "hyperty://example.com/a",
        Some("user://example.com/alice"),
        "example.com",
    );
    let bob = hyperty(
        "hyperty://example.com/b",
        Some("user://example.com/bob"),
        "example.com",
    );
    let carol = hyperty(
        "hyperty://example.com/c",
        Some("user://example.com/carol"),
        "example.com",
    );
    let anonymous = hyperty("hyperty://example.com/x", None, "example.com");
    let chat = object("comm://example.com/chat-1/subscription");
    allowed(&engine.decide(&query(alice, "subscribe", chat)));
    allowed(&engine.decide(&query(bob, "subscribe", chat)));
    allowed(&engine.decide(&query(
        bob,
        "subscribe",
        object("comm://example.com/chat-1/changes"),
    )));
    denied_by(
        &engine.decide(&query(carol, "subscribe", chat)),
        "subscribe-needs-consent",
    );
    denied_by(
        &engine.decide(&query(anonymous, "subscribe", chat)),
        "subscribe-needs-consent",
    );
    // An unknown object has no owner: nobody may subscribe (unless the node names the owner).
    let other = object("comm://example.com/other");
    denied_by(
        &engine.decide(&query(alice, "subscribe", other)),
        "subscribe-needs-consent",
    );
    let owned = Resource {
        owner_user: Some("user://example.com/carol"),
        ..other
    };
    allowed(&engine.decide(&query(carol, "subscribe", owned)));
    // Other actions on the object are allowed.
    allowed(&engine.decide(&query(carol, "update", chat)));
}

#[test]
fn rate_limit() {
    let engine = load("rate-limit");
    let mut q = query(
        hyperty("hyperty://example.com/a", None, "example.com"),
        "update",
        to_hyperty("hyperty://example.com/b", None, "example.com"),
    );
    q.context.rate_per_minute = 120;
    allowed(&engine.decide(&q));
    q.context.rate_per_minute = 121;
    denied_by(&engine.decide(&q), "rate-limit");
}

#[test]
fn anonymous() {
    let engine = load("anonymous");
    let runtime = Principal {
        address: "runtime://example.com/rt-9",
        kind: PrincipalKind::Runtime,
        runtime: Some("runtime://example.com/rt-9"),
        user: None,
        domain: "example.com",
    };
    let allocation = Resource {
        address: "domain://msg-node.example.com/address-allocation",
        kind: ResourceKind::Node,
        owner_user: None,
        owner_runtime: None,
        domain: "example.com",
    };
    let registry = Resource {
        address: "domain://registry.example.com",
        kind: ResourceKind::Domain,
        ..allocation
    };
    let hyperty_target = to_hyperty("hyperty://example.com/b", None, "example.com");
    allowed(&engine.decide(&query(runtime, "create", allocation)));
    allowed(&engine.decide(&query(runtime, "create", registry)));
    denied_by(
        &engine.decide(&query(runtime, "create", hyperty_target)),
        "anonymous-limited",
    );
    let authenticated = Principal {
        user: Some("user://example.com/alice"),
        ..runtime
    };
    allowed(&engine.decide(&query(authenticated, "create", hyperty_target)));
}
