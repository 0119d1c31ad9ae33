//! The Matrix Client-Server API inside the node (DESIGN.md section 5), with ruma's types.
//!
//! Every route is a thin handler: the [`Ruma`](extract::Ruma) extractor reads, authenticates
//! and parses the request; the handler calls the [`Accounts`](accounts::Accounts) service; a
//! failure is a [`MatrixError`](error::MatrixError), mapped to status and `errcode` in one place
//! (`error.rs`). Routes are registered under every path ruma knows for an endpoint (`r0`, `v3`).
//! A known path with another method answers 405 `M_UNRECOGNIZED`; any other `/_matrix/` path
//! 404 `M_UNRECOGNIZED`.
//!
//! Served so far: `versions`, `capabilities`, `login` (password, JWT), `register` (with
//! `m.login.dummy`), `register/available`, `logout`, `logout/all`, `account/whoami`.

mod account;
pub mod accounts;
mod capabilities;
mod credentials;
pub mod error;
mod extract;
mod login;
mod logout;
mod register;
pub mod subject;
mod uia;
mod versions;

use std::collections::BTreeMap;

use axum::Router;
use axum::handler::Handler;
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
pub use login::JWT_LOGIN_TYPE;

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
    routes
        .into_router()
        .route("/_matrix", any(unrecognized))
        .route("/_matrix/{*rest}", any(unrecognized))
}

/// Method routers by path, merged before they become routes so that each path gets one
/// "wrong method" fallback.
#[derive(Default)]
struct Routes {
    paths: BTreeMap<&'static str, MethodRouter<Node>>,
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
            let method = on(filter, handler.clone());
            let merged = match self.paths.remove(path) {
                Some(existing) => existing.merge(method),
                None => method,
            };
            self.paths.insert(path, merged);
        }
    }

    fn into_router(self) -> Router<Node> {
        self.paths
            .into_iter()
            .fold(Router::new(), |router, (path, methods)| {
                router.route(path, methods.fallback(method_not_allowed))
            })
    }
}

async fn unrecognized() -> MatrixError {
    MatrixError::UnrecognizedEndpoint
}

async fn method_not_allowed() -> MatrixError {
    MatrixError::MethodNotAllowed
}
