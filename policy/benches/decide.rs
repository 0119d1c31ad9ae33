#![allow(clippy::unwrap_used)]
//! One decision against a large directory: 1,000 generated policies (permits and forbids over
//! every action, groups, owners and context conditions) and 1,000 users in 50 groups.
//! Criterion measures the mean; then each query's single decisions are timed one by one for
//! their percentiles (printed at the end).

use criterion::{Criterion, criterion_group, criterion_main};
use rethink_policy::{
    Engine, Facts, MATRIX_ACTIONS, Principal, PrincipalKind, Query, RETHINK_TYPES, Resource,
    ResourceKind, SCHEMA, Source, Sources,
};
use std::fmt::Write;
use std::hint::black_box;
use std::time::{Duration, Instant};

const USERS: usize = 1_000;
const GROUPS: usize = 50;
const POLICIES: usize = 1_000;
/// Distinct senders and targets of the uncached queries (the engine's caches keep 4,096).
const UNCACHED: usize = 10_000;
/// Every action: the reTHINK types, `message` (custom types), the Matrix actions.
fn actions() -> Vec<&'static str> {
    let mut all = RETHINK_TYPES.to_vec();
    all.push("message");
    all.extend(MATRIX_ACTIONS);
    all
}

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
    let actions = actions();
    let mut out = String::new();
    for i in 0..POLICIES {
        let a = actions[i % actions.len()];
        let b = actions[(i * 7 + 3) % actions.len()];
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

    // A sender in group g47, which policy p47 (a blocklist forbid on updates to hyperties)
    // names: its condition reads entities, so this decision needs the entity slice.
    let carol = user(47);
    let dave = user(40);
    let blocked_sender = Principal {
        address: "hyperty://d0.com/h-47",
        runtime: Some("runtime://d0.com/rt-47"),
        user: Some(&carol),
        ..sender
    };
    let blocking_target = Resource {
        address: "hyperty://d0.com/h-40",
        owner_user: Some(&dave),
        owner_runtime: Some("runtime://d0.com/rt-40"),
        ..target
    };
    let reads_entities = Query {
        principal: blocked_sender,
        resource: blocking_target,
        context: facts(
            "update",
            "ws",
            blocked_sender.address,
            blocking_target.address,
        ),
        ..update
    };

    let queries = [
        ("update_hyperty_to_hyperty", &update),
        ("update_reads_entities", &reads_entities),
        ("custom_type_ping", &custom),
        ("subscribe_object", &subscribe),
        ("matrix_send_room", &matrix_send),
    ];
    // The engine caches each sender's and target's synthesized entities; these queries have
    // a new sender and a new target every time (more of them than the caches keep), so every
    // decision synthesizes both.
    let addresses: Vec<(String, String, String, String)> = (0..UNCACHED)
        .map(|i| {
            (
                format!("hyperty://d0.com/n-{i}"),
                format!("runtime://d0.com/n-{i}"),
                format!("hyperty://d0.com/m-{i}"),
                format!("runtime://d0.com/m-{i}"),
            )
        })
        .collect();
    let uncached: Vec<Query<'_>> = addresses
        .iter()
        .map(|(h, rt, to, to_rt)| Query {
            principal: Principal {
                address: h,
                runtime: Some(rt),
                ..sender
            },
            resource: Resource {
                address: to,
                owner_runtime: Some(to_rt),
                ..target
            },
            context: facts("update", "ws", h, to),
            ..update
        })
        .collect();

    let mut group = c.benchmark_group("decide");
    for (name, query) in queries {
        group.bench_function(name, |b| b.iter(|| engine.decide(black_box(query))));
    }
    group.bench_function("update_uncached", |b| {
        let mut next = uncached.iter().cycle();
        b.iter(|| engine.decide(black_box(next.next().unwrap())))
    });
    group.finish();
    latency(&engine, &queries, &uncached);
}

/// Criterion reports means; the target is on the 99th percentile of single decisions, so time
/// each of `SAMPLES` decisions on its own (after a warm-up) and print the percentiles.
fn latency(engine: &Engine, queries: &[(&str, &Query<'_>)], uncached: &[Query<'_>]) {
    const SAMPLES: usize = 50_000;
    // Not while profiling (`-- --profile-time N`), which is about the criterion loop alone.
    if std::env::args().any(|a| a == "--profile-time") {
        return;
    }
    println!("single decisions ({SAMPLES} per query): p50 / p90 / p99 / p99.9 / max");
    let all = queries
        .iter()
        .map(|(name, query)| (*name, std::slice::from_ref(*query)))
        .chain([("update_uncached", uncached)]);
    for (name, cycle) in all {
        for query in cycle.iter().cycle().take(SAMPLES / 10) {
            black_box(engine.decide(black_box(query)));
        }
        let mut times: Vec<Duration> = cycle
            .iter()
            .cycle()
            .take(SAMPLES)
            .map(|query| {
                let start = Instant::now();
                black_box(engine.decide(black_box(query)));
                start.elapsed()
            })
            .collect();
        times.sort_unstable();
        let at = |q: f64| times[((SAMPLES as f64 * q) as usize).min(SAMPLES - 1)];
        println!(
            "  {name:<28} {:>8.2?} {:>8.2?} {:>8.2?} {:>8.2?} {:>8.2?}",
            at(0.5),
            at(0.9),
            at(0.99),
            at(0.999),
            times[SAMPLES - 1]
        );
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
