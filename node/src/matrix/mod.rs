//! The Matrix Client-Server API inside the node, with ruma's types.
//!
//! Every route is a thin handler: the `Ruma<T>` extractor (`extract.rs`) reads, authenticates and
//! parses the request (`/sync` has its own, `SyncRequest` in `sync_request.rs`); the handler
//! calls a service: [`Accounts`], the room engine ([`crate::rooms`]), per-user data
//! ([`crate::userdata`]), the bridge ([`crate::bridge`]); an action that changes a room first
//! passes the enforcement point (`enforce.rs`). A failure is a [`MatrixError`], mapped to status
//! and `errcode` in one place (`error.rs`).
//! Routes are registered under every path ruma knows for an endpoint (`r0`, `v3`). A known path
//! with another method answers 405 `M_UNRECOGNIZED`; any other `/_matrix/` path 404
//! `M_UNRECOGNIZED`; a preflight `OPTIONS` on any of them is answered by `cors.rs`.
//!
//! Served: `versions`, `capabilities`, `login` (password, JWT), `register` (with
//! `m.login.dummy`), `register/available`, `logout`, `logout/all`, `account/whoami`; rooms
//! (`createRoom`, `joined_rooms`, directory aliases), membership (`join`, `invite`, `leave`,
//! `forget`, `kick`, `ban`, `unban`, `members`, `joined_members`), events (`send`, state,
//! `redact`, `event`, `messages`, `context`) and `/sync`; and, registered by
//! `userdata_routes.rs`, filters, profiles, presence, account data, push rules, devices,
//! end-to-end keys (with cross-signing), `sendToDevice`, typing, receipts and read markers.
//!
//! The server's signing key is published at `GET /_matrix/key/v2/server` (`server_key.rs`).

mod account;
mod account_data;
pub mod accounts;
pub(crate) mod appservice;
mod capabilities;
mod cors;
mod credentials;
mod devices;
mod enforce;
pub mod error;
mod event_filter;
mod events;
mod extract;
mod filter;
mod keys;
mod login;
mod logout;
mod membership;
mod password;
mod presence;
pub(crate) mod profile;
mod pushrules;
pub mod rate_limit;
mod receipts;
mod register;
mod room;
mod server_key;
pub mod subject;
mod sync;
mod sync_answer;
mod sync_request;
mod to_device;
mod token;
mod typing;
mod uia;
mod userdata_routes;
mod versions;

use std::collections::BTreeMap;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{MethodFilter, MethodRouter, any, on};
use ruma::api::Metadata;
use ruma::api::client::account::{get_username_availability, register as register_api, whoami};
use ruma::api::client::discovery::{get_capabilities, get_supported_versions};
use ruma::api::client::session::{
    get_login_types, login as login_api, logout as logout_api, logout_all,
};
use ruma::api::path_builder::PathBuilder as _;

pub use accounts::Accounts;
pub use error::MatrixError;
pub(crate) use extract::body_over_limit;
pub use login::JWT_LOGIN_TYPE;
pub use password::HashError;

use crate::node::Node;

/// The Matrix routes, to be merged into the node's router.
pub fn router() -> Router<Node> {
    let mut routes = Routes::default();
    routes.add::<get_supported_versions::Request, _, _>(versions::get_versions);
    routes.add::<get_capabilities::v3::Request, _, _>(capabilities::get_capabilities);
    routes.add::<get_login_types::v3::Request, _, _>(login::get_login_types);
    routes.add::<login_api::v3::Request, _, _>(login::login);
    routes.add::<logout_api::v3::Request, _, _>(logout::logout);
    routes.add::<logout_all::v3::Request, _, _>(logout::logout_all);
    routes.add::<register_api::v3::Request, _, _>(register::register);
    routes.add::<get_username_availability::v3::Request, _, _>(register::available);
    routes.add::<whoami::v3::Request, _, _>(account::whoami);
    add_room_routes(&mut routes);
    userdata_routes::add(&mut routes);
    routes
        .into_router()
        .route(
            "/_matrix/key/v2/server",
            axum::routing::get(server_key::server_keys)
                .options(cors::preflight)
                .fallback(method_not_allowed),
        )
        .route("/_matrix", any(unrecognized))
        .route("/_matrix/{*rest}", any(unrecognized))
}

/// Rooms, membership, events and `/sync`.
fn add_room_routes(routes: &mut Routes) {
    use ruma::api::client::{
        alias, context, membership as m, message, redact, room as r, state, sync::sync_events,
    };
    routes.add::<r::create_room::v3::Request, _, _>(room::create_room);
    routes.add::<m::joined_rooms::v3::Request, _, _>(room::joined_rooms);
    routes.add::<alias::create_alias::v3::Request, _, _>(room::create_alias);
    routes.add::<alias::get_alias::v3::Request, _, _>(room::get_alias);
    routes.add::<ruma::api::client::appservice::request_ping::v1::Request, _, _>(appservice::ping);
    routes.add::<alias::delete_alias::v3::Request, _, _>(room::delete_alias);
    routes.add::<r::aliases::v3::Request, _, _>(room::room_aliases);
    routes.add::<m::join_room_by_id::v3::Request, _, _>(membership::join_by_id);
    routes.add::<m::join_room_by_id_or_alias::v3::Request, _, _>(membership::join_by_id_or_alias);
    routes.add::<m::invite_user::v3::Request, _, _>(membership::invite);
    routes.add::<m::leave_room::v3::Request, _, _>(membership::leave);
    routes.add::<m::forget_room::v3::Request, _, _>(membership::forget);
    routes.add::<m::kick_user::v3::Request, _, _>(membership::kick);
    routes.add::<m::ban_user::v3::Request, _, _>(membership::ban);
    routes.add::<m::unban_user::v3::Request, _, _>(membership::unban);
    routes.add::<m::get_member_events::v3::Request, _, _>(membership::members);
    routes.add::<m::joined_members::v3::Request, _, _>(membership::joined_members);
    routes.add::<message::send_message_event::v3::Request, _, _>(events::send_message);
    routes.add_empty_last::<state::send_state_event::v3::Request, _, _>(events::send_state);
    routes.add::<state::get_state_events::v3::Request, _, _>(events::get_state);
    routes.add_empty_last::<state::get_state_event_for_key::v3::Request, _, _>(
        events::get_state_for_key,
    );
    routes.add::<redact::redact_event::v3::Request, _, _>(events::redact);
    routes.add::<r::get_room_event::v3::Request, _, _>(events::get_event);
    routes.add::<message::get_message_events::v3::Request, _, _>(events::messages);
    routes.add::<context::get_context::v3::Request, _, _>(events::context);
    routes.add::<sync_events::v3::Request, _, _>(sync::sync);
}

/// Method routers by path, merged before they become routes so that each path gets one
/// "wrong method" fallback.
#[derive(Default)]
struct Routes {
    paths: BTreeMap<String, MethodRouter<Node>>,
}

impl Routes {
    /// Serves the endpoint `T` with `handler` on every path ruma lists for it.
    fn add<T, H, X>(&mut self, handler: H)
    where
        T: Metadata,
        H: Handler<X, Node>,
        X: 'static,
    {
        let filter = MethodFilter::try_from(T::METHOD)
            .unwrap_or_else(|_| panic!("ruma endpoint with method {}", T::METHOD));
        for path in T::PATH_BUILDER.all_paths() {
            self.insert(path.to_owned(), on(filter, handler.clone()));
        }
    }

    /// Like [`Routes::add`], and also on each path without its last parameter (with and
    /// without the trailing slash), where that parameter is empty (the empty state key).
    fn add_empty_last<T, H, X>(&mut self, handler: H)
    where
        T: Metadata,
        H: Handler<X, Node>,
        X: 'static,
    {
        self.add::<T, H, X>(handler.clone());
        let filter = MethodFilter::try_from(T::METHOD)
            .unwrap_or_else(|_| panic!("ruma endpoint with method {}", T::METHOD));
        for path in T::PATH_BUILDER.all_paths() {
            let Some((prefix, _)) = path.rsplit_once('/') else {
                continue;
            };
            for short in [prefix.to_owned(), format!("{prefix}/")] {
                self.insert(short, on(filter, handler.clone()));
            }
        }
    }

    /// Adds `method` to the methods served on `path`.
    fn insert(&mut self, path: String, method: MethodRouter<Node>) {
        let merged = match self.paths.remove(&path) {
            Some(existing) => existing.merge(method),
            None => method,
        };
        self.paths.insert(path, merged);
    }

    fn into_router(self) -> Router<Node> {
        self.paths
            .into_iter()
            .fold(Router::new(), |router, (path, methods)| {
                router.route(
                    &path,
                    methods
                        .options(cors::preflight)
                        .fallback(method_not_allowed),
                )
            })
    }
}

/// An unknown endpoint; a preflight for it is answered all the same.
async fn unrecognized(method: Method) -> Response {
    if method == Method::OPTIONS {
        return cors::preflight().await;
    }
    MatrixError::UnrecognizedEndpoint.into_response()
}

async fn method_not_allowed() -> MatrixError {
    MatrixError::MethodNotAllowed
}
