//! The facts of a decision: the policy clock (time, weekday, hour), and the translation of a
//! message and what the node knows of its sender and target into a `rethink_policy::Query`.
//! Shared by the enforcement point and the `policy check` dry run, so both decide alike.

use std::time::{SystemTime, UNIX_EPOCH};

use rethink_policy::{Facts, Principal, PrincipalKind, Query, Resource, ResourceKind};
use rethink_proto::AddressRef;

/// The clock of policy decisions: real time shifted to the operator's zone, or a pinned time.
#[derive(Debug, Clone)]
pub struct PolicyClock {
    utc_offset_minutes: i32,
    fixed: Option<i64>,
}

/// The time facts of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Unix seconds (UTC).
    pub time: i64,
    /// 0 = Monday … 6 = Sunday, in the operator's zone.
    pub weekday: i64,
    /// 0..=23, in the operator's zone.
    pub hour: i64,
}

impl PolicyClock {
    pub fn new(utc_offset_minutes: i32, fixed: Option<i64>) -> Self {
        Self {
            utc_offset_minutes,
            fixed,
        }
    }

    /// The time facts now.
    pub fn now(&self) -> Now {
        let time = self.fixed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        time_facts(time, self.utc_offset_minutes)
    }
}

/// Weekday and hour of a unix time in a zone `offset_minutes` east of UTC.
pub fn time_facts(time: i64, offset_minutes: i32) -> Now {
    let local = time + i64::from(offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    // 1970-01-01 was a Thursday (3 when Monday is 0).
    let weekday = (days + 3).rem_euclid(7);
    let hour = local.rem_euclid(86_400) / 3_600;
    Now {
        time,
        weekday,
        hour,
    }
}

/// The domain an address belongs to: its authority, without the node's service prefixes for
/// `domain://` addresses (`msg-node.D`, `registry.D`, `idm.D` are all domain `D`).
pub fn domain_of(address: &str) -> &str {
    AddressRef::parse(address).map_or("", |a| domain(&a))
}

fn domain<'a>(a: &AddressRef<'a>) -> &'a str {
    let auth = a.authority();
    if a.scheme() == "domain" {
        for prefix in ["msg-node.", "registry.", "idm."] {
            if let Some(d) = auth.strip_prefix(prefix) {
                return d;
            }
        }
    }
    auth
}

/// The identity provider of a subject `user://idp/name` (empty for other forms).
pub fn idp_of(subject: &str) -> &str {
    match AddressRef::parse(subject) {
        Ok(a) if a.scheme() == "user" => a.authority(),
        _ => "",
    }
}

/// What the node knows of a message's sender.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub address: &'a str,
    pub runtime: Option<&'a str>,
    /// The authenticated identity, `None` when anonymous.
    pub user: Option<&'a str>,
    pub transport: &'a str,
    pub rate_per_minute: i64,
    pub allocations: i64,
}

/// What the node knows of one target.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub address: &'a str,
    /// Whether the address is one of the node's own endpoints.
    pub node_endpoint: bool,
    pub owner_user: Option<&'a str>,
    pub owner_runtime: Option<&'a str>,
}

/// The principal kind of a sending address.
pub fn principal_kind(address: &str) -> PrincipalKind {
    principal_kind_of_scheme(AddressRef::parse(address).map_or("", |a| a.scheme()))
}

fn principal_kind_of_scheme(scheme: &str) -> PrincipalKind {
    match scheme {
        "hyperty-runtime" | "runtime" => PrincipalKind::Runtime,
        "user" => PrincipalKind::User,
        "domain" => PrincipalKind::Domain,
        _ => PrincipalKind::Hyperty,
    }
}

/// The resource kind of a target address.
pub fn resource_kind(address: &str, node_endpoint: bool) -> ResourceKind {
    resource_kind_of_scheme(
        AddressRef::parse(address).map_or("", |a| a.scheme()),
        node_endpoint,
    )
}

fn resource_kind_of_scheme(scheme: &str, node_endpoint: bool) -> ResourceKind {
    if node_endpoint {
        return ResourceKind::Node;
    }
    match scheme {
        "hyperty" => ResourceKind::Hyperty,
        "hyperty-runtime" | "runtime" => ResourceKind::Runtime,
        "domain" => ResourceKind::Domain,
        _ => ResourceKind::Object,
    }
}

/// The sender's half of the queries for one message, computed once for all its recipients:
/// the sender's address is parsed once, each target's once in [`Message::query`].
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    kind: &'a str,
    size: i64,
    now: Now,
    sender: Sender<'a>,
    principal: Principal<'a>,
    from_scheme: &'a str,
    idp: &'a str,
}

impl<'a> Message<'a> {
    /// A message of type `kind`, `size` bytes, from `sender`, decided at `now`.
    pub fn new(kind: &'a str, size: usize, sender: &Sender<'a>, now: Now) -> Self {
        let (from_scheme, from_domain) = match AddressRef::parse(sender.address) {
            Ok(a) => (a.scheme(), domain(&a)),
            Err(_) => ("", ""),
        };
        Self {
            kind,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            now,
            sender: *sender,
            principal: Principal {
                address: sender.address,
                kind: principal_kind_of_scheme(from_scheme),
                runtime: sender.runtime,
                user: sender.user,
                domain: from_domain,
            },
            from_scheme,
            idp: sender.user.map_or("", idp_of),
        }
    }

    /// The query for this message to `target`.
    pub fn query(&self, target: &Target<'a>) -> Query<'a> {
        let (to_scheme, to_domain) = match AddressRef::parse(target.address) {
            Ok(a) => (a.scheme(), domain(&a)),
            Err(_) => ("", ""),
        };
        let sender = &self.sender;
        Query {
            principal: self.principal,
            action: self.kind,
            resource: Resource {
                address: target.address,
                kind: resource_kind_of_scheme(to_scheme, target.node_endpoint),
                owner_user: target.owner_user,
                owner_runtime: target.owner_runtime,
                domain: to_domain,
            },
            context: Facts {
                time: self.now.time,
                weekday: self.now.weekday,
                hour: self.now.hour,
                transport: sender.transport,
                message_type: self.kind,
                from: sender.address,
                to: target.address,
                from_scheme: self.from_scheme,
                to_scheme,
                from_domain: self.principal.domain,
                to_domain,
                size: self.size,
                authenticated: sender.user.is_some(),
                idp: self.idp,
                rate_per_minute: sender.rate_per_minute,
                allocations: sender.allocations,
            },
        }
    }
}

/// The query for one message (type `kind`, `size` bytes) from `sender` to `target` at `now`.
pub fn query<'a>(
    kind: &'a str,
    size: usize,
    sender: &Sender<'a>,
    target: &Target<'a>,
    now: Now,
) -> Query<'a> {
    Message::new(kind, size, sender, now).query(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_and_hour_in_a_zone() {
        // 2026-11-24T10:30:00Z is a Tuesday.
        let t = 1_795_516_200;
        assert_eq!(
            time_facts(t, 0),
            Now {
                time: t,
                weekday: 1,
                hour: 10
            }
        );
        assert_eq!(time_facts(t, 14 * 60).hour, 0);
        assert_eq!(time_facts(t, 14 * 60).weekday, 2);
        assert_eq!(time_facts(t, -11 * 60).hour, 23);
        assert_eq!(time_facts(t, -11 * 60).weekday, 0);
        assert_eq!(time_facts(0, 0).weekday, 3, "1970-01-01 was a Thursday");
    }

    #[test]
    fn a_message_parses_its_sender_once_and_each_target_once() {
        let sender = Sender {
            address: "hyperty://example.com/a",
            runtime: Some("hyperty-runtime://example.com/rt"),
            user: Some("user://idp.org/alice"),
            transport: "ws",
            rate_per_minute: 3,
            allocations: 2,
        };
        let now = time_facts(1_795_516_200, 0);
        let message = Message::new("PING", 120, &sender, now);
        let target = Target {
            address: "domain://registry.example.com",
            node_endpoint: true,
            owner_user: None,
            owner_runtime: None,
        };
        let q = message.query(&target);
        assert_eq!(q, query("PING", 120, &sender, &target, now));
        assert_eq!(q.principal.kind, PrincipalKind::Hyperty);
        assert_eq!(q.principal.domain, "example.com");
        assert_eq!(q.resource.kind, ResourceKind::Node);
        assert_eq!(q.resource.domain, "example.com");
        let c = q.context;
        assert_eq!((c.from_scheme, c.to_scheme), ("hyperty", "domain"));
        assert_eq!((c.idp, c.size, c.hour), ("idp.org", 120, 10));
        assert!(c.authenticated);
        let q = message.query(&Target {
            address: "comm://other.org/chat/changes",
            node_endpoint: false,
            ..target
        });
        assert_eq!(q.resource.kind, ResourceKind::Object);
        assert_eq!(
            (q.context.to_domain, q.context.to_scheme),
            ("other.org", "comm")
        );
    }

    #[test]
    fn domains_and_kinds() {
        assert_eq!(domain_of("domain://msg-node.example.com/sm"), "example.com");
        assert_eq!(domain_of("domain://registry.example.com"), "example.com");
        assert_eq!(domain_of("hyperty://example.com/x"), "example.com");
        assert_eq!(idp_of("user://google.com/alice"), "google.com");
        assert_eq!(idp_of("@alice:example.com"), "");
        assert_eq!(
            principal_kind("hyperty-runtime://d/rt"),
            PrincipalKind::Runtime
        );
        assert_eq!(
            resource_kind("comm://d/abc/changes", false),
            ResourceKind::Object
        );
        assert_eq!(
            resource_kind("domain://msg-node.d/sm", true),
            ResourceKind::Node
        );
    }
}
