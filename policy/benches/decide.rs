#![allow(clippy::unwrap_used)]
//! One decision against a large directory: 1,000 generated policies (permits and forbids over
//! every action, groups, owners and context conditions) and 1,000 users in 50 groups.

use criterion::{Criterion, criterion_group, criterion_main};
use rethink_policy::{
    Engine, Facts, Principal, PrincipalKind, Query, Resource, ResourceKind, SCHEMA, Source, Sources,
};
use std::fmt::Write;
use std::hint::black_box;

const USERS: usize = 1_000;
const GROUPS: usize = 50;
const POLICIES: usize = 1_000;
const ACTIONS: [&str; 15] = [
    "create",
    "read",
    "update",
    "delete",
    "subscribe",
    "unsubscribe",
    "response",
    "forward",
    "execute",
    "message",
    "matrix:send",
    "matrix:state",
    "matrix:invite",
    "matrix:join",
    "matrix:createRoom",
];

fn user(i: usize) -> String {
    format!("user://idp.com/u{i}")
}

/// 50 groups (the first 5 parents of the others), 1,000 users in one or two groups, some with a
/// blocklist, 20 domains of which half are in group g0, 100 objects with owners and allowed sets.
fn entities() -> String {
    let mut out = Vec::new();
    for g in 0..GROUPS {
        let parents = if g < 5 {
            String::new()
        } else {
            format!(r#"{{"type":"Rethink::Group","id":"g{}"}}"#, g % 5)
        };
        out.push(format!(
            r#"{{"uid":{{"type":"Rethink::Group","id":"g{g}"}},"attrs":{{}},"parents":[{parents}]}}"#
        ));
    }
    for u in 0..USERS {
        let mut parents = format!(r#"{{"type":"Rethink::Group","id":"g{}"}}"#, u % GROUPS);
        if u % 3 == 0 {
            write!(
                parents,
                r#",{{"type":"Rethink::Group","id":"g{}"}}"#,
                (u / 3) % GROUPS
            )
            .unwrap();
        }
        let blocked = if u % 10 == 0 {
            format!(
                r#","blocked":[{{"__entity":{{"type":"Rethink::User","id":"{}"}}}},{{"__entity":{{"type":"Rethink::User","id":"{}"}}}}]"#,
                user((u + 1) % USERS),
                user((u + 7) % USERS)
            )
        } else {
            String::new()
        };
        out.push(format!(
            r#"{{"uid":{{"type":"Rethink::User","id":"{}"}},"attrs":{{"idp":"idp.com"{blocked}}},"parents":[{parents}]}}"#,
            user(u)
        ));
    }
    for d in 0..20 {
        let parents = if d % 2 == 0 {
            r#"{"type":"Rethink::Group","id":"g0"}"#
        } else {
            ""
        };
        out.push(format!(
            r#"{{"uid":{{"type":"Rethink::Domain","id":"d{d}.com"}},"attrs":{{}},"parents":[{parents}]}}"#
        ));
    }
    for o in 0..100 {
        out.push(format!(
            r#"{{"uid":{{"type":"Rethink::Object","id":"comm://d0.com/o{o}"}},"attrs":{{"owner":{{"__entity":{{"type":"Rethink::User","id":"{}"}}}},"allowed":[{{"__entity":{{"type":"Rethink::User","id":"{}"}}}},{{"__entity":{{"type":"Rethink::User","id":"{}"}}}}]}},"parents":[{{"type":"Rethink::Domain","id":"d0.com"}}]}}"#,
            user(o),
            user(o + 1),
            user(o + 2)
        ));
    }
    format!("[{}]", out.join(",\n"))
}

/// 1,000 policies in eight shapes, over every action (one in 40 for all actions): most are
/// scoped to a group, a user or an entity type, as operators write them; one shape in eight is
/// a global forbid on a context condition, which every request of its action evaluates.
fn policies() -> String {
    let mut out = String::new();
    for i in 0..POLICIES {
        let a = ACTIONS[i % ACTIONS.len()];
        let b = ACTIONS[(i * 7 + 3) % ACTIONS.len()];
        let g = i % GROUPS;
        let action = if i % 40 == 0 {
            "action".to_owned()
        } else {
            format!(r#"action == Rethink::Action::"{a}""#)
        };
        let policy = match i % 8 {
            0 => format!(
                r#"permit(principal in Rethink::Group::"g{g}", {action}, resource) when {{ context.hour >= {} && context.from_domain == context.to_domain }};"#,
                i % 24
            ),
            1 => format!(
                r#"forbid(principal, action in [Rethink::Action::"{a}", Rethink::Action::"{b}"], resource in Rethink::Group::"g{g}") when {{ context.size > {} }};"#,
                10_000 + i
            ),
            2 => format!(
                r#"permit(principal in Rethink::Group::"g{g}", {action}, resource is Rethink::Object) when {{ principal has user && resource has allowed && resource.allowed.contains(principal.user) }};"#
            ),
            3 => format!(
                r#"forbid(principal, {action}, resource) when {{ context.rate_per_minute > {} }};"#,
                200 + i
            ),
            4 => format!(
                r#"permit(principal in Rethink::Group::"g{g}", action in Rethink::Action::"matrix", resource is Rethink::Object) when {{ context.transport == "matrix" && context.from_domain == "d{}.com" }};"#,
                i % 20
            ),
            5 => format!(
                r#"forbid(principal == Rethink::User::"{}", {action}, resource);"#,
                user(i)
            ),
            6 => format!(
                r#"permit(principal in Rethink::Group::"g{g}", action == Rethink::Action::"message", resource) when {{ context.message_type == "T{}" && context.authenticated }};"#,
                i % 10
            ),
            _ => format!(
                r#"forbid(principal in Rethink::Group::"g{g}", {action}, resource is Rethink::Hyperty) when {{ resource has user && resource.user has blocked && principal has user && resource.user.blocked.contains(principal.user) && context.weekday >= {} }};"#,
                i % 7
            ),
        };
        writeln!(out, "@id(\"p{i}\")\n{policy}").unwrap();
    }
    out
}

fn facts<'a>(message_type: &'a str, transport: &'a str, from: &'a str, to: &'a str) -> Facts<'a> {
    Facts {
        time: 1_767_700_800,
        weekday: 2,
        hour: 12,
        transport,
        message_type,
        from,
        to,
        from_scheme: "hyperty",
        to_scheme: "hyperty",
        from_domain: "d0.com",
        to_domain: "d0.com",
        size: 300,
        authenticated: true,
        idp: "idp.com",
        rate_per_minute: 12,
        allocations: 2,
    }
}

fn decide(c: &mut Criterion) {
    let entities = entities();
    let policies = policies();
    let engine = Engine::load(&Sources {
        schema: Source {
            name: "schema.cedarschema",
            text: SCHEMA,
        },
        policies: vec![Source {
            name: "bench.cedar",
            text: &policies,
        }],
        entities: Some(Source {
            name: "entities.json",
            text: &entities,
        }),
    })
    .unwrap();
    assert_eq!(engine.policy_count(), POLICIES);

    let alice = user(10);
    let bob = user(11);
    let sender = Principal {
        address: "hyperty://d0.com/h-10",
        kind: PrincipalKind::Hyperty,
        runtime: Some("runtime://d0.com/rt-10"),
        user: Some(&alice),
        domain: "d0.com",
    };
    let target = Resource {
        address: "hyperty://d0.com/h-11",
        kind: ResourceKind::Hyperty,
        owner_user: Some(&bob),
        owner_runtime: Some("runtime://d0.com/rt-11"),
        domain: "d0.com",
    };
    let update = Query {
        principal: sender,
        action: "update",
        resource: target,
        context: facts("update", "ws", sender.address, target.address),
    };
    let custom = Query {
        action: "PING",
        context: facts("PING", "ws", sender.address, target.address),
        ..update
    };
    let object = Resource {
        address: "comm://d0.com/o9/subscription",
        kind: ResourceKind::Object,
        owner_user: None,
        owner_runtime: None,
        domain: "d0.com",
    };
    let subscribe = Query {
        action: "subscribe",
        resource: object,
        context: facts("subscribe", "ws", sender.address, object.address),
        ..update
    };
    let matrix_user = Principal {
        address: "@u10:d0.com",
        kind: PrincipalKind::User,
        runtime: None,
        user: Some("@u10:d0.com"),
        domain: "d0.com",
    };
    let room = Resource {
        address: "!room:d0.com",
        kind: ResourceKind::Room,
        owner_user: None,
        owner_runtime: None,
        domain: "d0.com",
    };
    let matrix_send = Query {
        principal: matrix_user,
        action: "matrix:send",
        resource: room,
        context: facts("matrix:send", "matrix", matrix_user.address, room.address),
    };

    let mut group = c.benchmark_group("decide");
    for (name, query) in [
        ("update_hyperty_to_hyperty", &update),
        ("custom_type_ping", &custom),
        ("subscribe_object", &subscribe),
        ("matrix_send_room", &matrix_send),
    ] {
        group.bench_function(name, |b| b.iter(|| engine.decide(black_box(query))));
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
