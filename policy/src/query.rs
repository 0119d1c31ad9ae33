//! The query the node builds for one message: facts about the sender, the target and the
//! message, in plain Rust types. The crate turns them into a Cedar request.

/// One authorization question: may `principal` do `action` to `resource`, given `context`?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// The sender.
    pub principal: Principal<'a>,
    /// A reTHINK message type (`create`, `update`, `PING`, ...) or a Matrix action
    /// (`matrix:send`, `matrix:state`, `matrix:invite`, `matrix:join`, `matrix:createRoom`).
    /// See [`action_name`](crate::action_name) for how it becomes a Cedar action.
    pub action: &'a str,
    /// The target.
    pub resource: Resource<'a>,
    /// What the node computed about the message.
    pub context: Facts<'a>,
}

/// What kind of sender a [`Principal`] is; it picks the Cedar entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A hyperty address (`Rethink::Hyperty`).
    Hyperty,
    /// A runtime URL or a path below it (`Rethink::Runtime`).
    Runtime,
    /// A user id (`Rethink::User`).
    User,
    /// A domain (`Rethink::Domain`).
    Domain,
}

/// The sender of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    /// The sender's address; the uid of the principal entity.
    pub address: &'a str,
    /// What the address is.
    pub kind: PrincipalKind,
    /// The runtime URL of the sending session.
    pub runtime: Option<&'a str>,
    /// The authenticated identity (`user://idp/name` or a Matrix user id); `None` if anonymous.
    pub user: Option<&'a str>,
    /// The sender's domain.
    pub domain: &'a str,
}

/// What kind of target a [`Resource`] is; it picks the Cedar entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// A hyperty (`Rethink::Hyperty`).
    Hyperty,
    /// A runtime (`Rethink::Runtime`).
    Runtime,
    /// A data object `comm://...` or one of its derived addresses (`Rethink::Object`, by base
    /// address: see [`object_base`](crate::object_base)).
    Object,
    /// A Matrix room (`Rethink::Object` too).
    Room,
    /// A domain address (`Rethink::Domain`).
    Domain,
    /// One of the node's own endpoints (`Rethink::Node`).
    Node,
}

/// The target of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    /// The target address; the uid of the resource entity (for objects, its base address).
    pub address: &'a str,
    /// What the address is.
    pub kind: ResourceKind,
    /// The user owning the target hyperty or runtime (or object), when the node knows it.
    pub owner_user: Option<&'a str>,
    /// The runtime owning the target hyperty, when the node knows it.
    pub owner_runtime: Option<&'a str>,
    /// The target's domain.
    pub domain: &'a str,
}

/// The context of a query: one field per attribute of the schema's `Facts` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts<'a> {
    /// Unix time, seconds.
    pub time: i64,
    /// Day of the week, 0 = Monday.
    pub weekday: i64,
    /// Hour of the day, 0..=23.
    pub hour: i64,
    /// `ws`, `matrix`, `stub`, `connector` or `federation`.
    pub transport: &'a str,
    /// The message type as sent (also for custom types, whose action is `message`).
    pub message_type: &'a str,
    /// The `from` address.
    pub from: &'a str,
    /// The `to` address.
    pub to: &'a str,
    /// The scheme of `from` (`hyperty`, `runtime`, ...).
    pub from_scheme: &'a str,
    /// The scheme of `to`.
    pub to_scheme: &'a str,
    /// The domain of `from`.
    pub from_domain: &'a str,
    /// The domain of `to`.
    pub to_domain: &'a str,
    /// The message size in bytes.
    pub size: i64,
    /// Whether the sending session is authenticated.
    pub authenticated: bool,
    /// The identity provider of the sender, `""` if anonymous.
    pub idp: &'a str,
    /// Messages from this sender in the last minute.
    pub rate_per_minute: i64,
    /// Addresses held by the sender's runtime.
    pub allocations: i64,
}
