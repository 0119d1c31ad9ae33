//! Integration tests: the real node on 127.0.0.1:0, driven by real clients: WebSocket runtimes
//! (tokio-tungstenite, over plain TCP and TLS), raw HTTP/1.1 and a Matrix client library
//! (matrix-sdk).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod support;

mod allocation;
mod appservice;
mod appservice_bench;
mod appservice_ephemeral;
mod appservice_mautrix;
mod appservice_rate_limit;
mod appservice_restart;
mod appservice_rethink;
mod appservice_support;
mod archive;
mod bad_input;
mod bridge;
mod canonical;
mod catalogue;
mod catalogue_reload;
mod closing;
mod connector_feed;
mod connector_matrix;
mod crossdomain;
mod crossdomain_delivery;
mod crossdomain_refusals;
mod durability;
mod http;
mod identity;
mod js_runtime;
mod jwt;
mod limits;
mod matrix_auth;
mod matrix_bridge_refusals;
mod matrix_cors;
mod matrix_cross_signing;
mod matrix_device_lists;
mod matrix_e2ee;
mod matrix_edge;
mod matrix_errors;
mod matrix_history;
mod matrix_policy;
mod matrix_presence;
mod matrix_redaction;
mod matrix_rooms;
mod matrix_signatures;
mod matrix_sync;
mod matrix_txns;
mod matrix_userdata;
mod policy;
mod process;
mod registry;
mod registry_rate;
mod resume;
mod routing;
mod server_limits;
mod shutdown;
mod store_postgres;
mod stub_backpressure;
mod stub_default;
mod stubs_host;
mod stubs_replace;
mod takeover;
mod tls;
mod vectors;
