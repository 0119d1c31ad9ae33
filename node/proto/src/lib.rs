//! rethink-proto: the reTHINK message model shared by every crate of the node.
//!
//! It owns the wire shape of a message: the [`Envelope`] (`id`, `type`, `from`,
//! `to`, `body`, unknown fields kept), [`address`] parsing, address [`pattern`]s (`slack://*`),
//! [`MessageType`], response [`Code`]s and the response builder; and the node-owned addresses of a domain ([`Endpoints`], DESIGN.md
//! section 3), which the bus serves and policies and their dry run name. It depends on serde,
//! serde_json and thiserror only: no I/O, no async runtime.
//!
//! Tolerant where runtimes differ (`id` number or string, `to` string or array, `body.desc` or
//! `body.description`, unknown fields preserved), strict where safety needs it (missing header
//! fields and malformed addresses are a [`ParseError`], answered with 400 by the transports).
//!
//! The header is parsed once; the body is never parsed on the routing path: an [`Envelope`] keeps
//! the original JSON text and forwards it byte for byte, with only the node's `seq` prepended.

pub mod address;
mod code;
mod endpoints;
mod envelope;
mod frame;
mod kind;
pub mod pattern;
mod response;
mod text;

pub use address::{AddressError, AddressRef};
pub use code::Code;
pub use endpoints::{Endpoint, Endpoints, SESSION};
pub use envelope::{Envelope, ParseError};
pub use frame::{Frame, Rejected, parse_frame, salvage};
pub use kind::MessageType;
pub use pattern::{AddressPattern, PatternError};
pub use response::{ResponseBody, ResponseBuilder};
