//! rethink-policy: the policy decision point of the node.
//!
//! Built on Cedar. Pure and synchronous: it receives the *contents* of a policy directory
//! (`schema.cedarschema`, `*.cedar`, `entities.json`, each with its file name for errors),
//! validates them strictly, and answers one [`Query`] per message with a [`Decision`].
//!
//! Loading uses `cedar-policy` (parsing, strict validation, entity parsing, error spans).
//! Deciding uses the evaluator underneath it (`cedar-policy-core`, the version `cedar-policy`
//! pins), so that per request nothing is rebuilt that can be built at load:
//! - a per-action index (module `index`): a message is checked only against the policies whose
//!   action scope can match its action, and within those only against the ones whose principal
//!   and resource scopes admit the sender and the target (bucketed by the entity they name);
//!   their `when`/`unless` conditions go to Cedar's evaluator, compiled once at load;
//! - entity slicing (modules `synth`, `slice`, `reads`): a request whose candidate conditions
//!   read entities gets a small entity set holding the synthesized principal and resource
//!   chains and what a condition can dereference from them in the operator's store, sharing
//!   the stored entities, with the hierarchy's closure computed on the spot;
//! - chain caches (module `chain`): each sender's and target's synthesized chain, ancestors and
//!   admitted policies per action are kept, so a repeated sender costs a lookup;
//! - compiled conditions (module `fast`): conditions on the context alone are evaluated on the
//!   query's facts, without Cedar's evaluator or a context record.
//!
//! A test checks decisions against Cedar's own authorizer on the whole policy set and the
//! whole entity store.
//!
//! ```
//! use rethink_policy::{Engine, Facts, Principal, PrincipalKind, Query, Resource, ResourceKind};
//!
//! let engine = Engine::allow_all();
//! let query = Query {
//!     principal: Principal {
//!         address: "hyperty://example.com/alice-1",
//!         kind: PrincipalKind::Hyperty,
//!         runtime: Some("runtime://example.com/rt-1"),
//!         user: Some("user://google.com/alice"),
//!         domain: "example.com",
//!     },
//!     action: "create",
//!     resource: Resource {
//!         address: "comm://example.com/chat-1",
//!         kind: ResourceKind::Object,
//!         owner_user: None,
//!         owner_runtime: None,
//!         domain: "example.com",
//!     },
//!     context: Facts::default(),
//! };
//! let decision = engine.decide(&query);
//! assert!(decision.allowed);
//! assert_eq!(decision.policies, ["default-allow"]);
//! ```

mod action;
mod address;
mod chain;
mod context;
mod decision;
mod engine;
mod error;
mod evaluate;
mod fast;
mod hash;
mod index;
mod names;
mod parse;
mod query;
mod reads;
mod slice;
mod sources;
mod span;
mod store;
mod synth;
mod validate;

pub use action::{MATRIX_ACTIONS, RETHINK_TYPES, action_name};
pub use address::object_base;
pub use decision::Decision;
pub use engine::Engine;
pub use error::PolicyError;
pub use query::{Facts, Principal, PrincipalKind, Query, Resource, ResourceKind};
pub use sources::{Source, Sources};

/// The canonical schema (`policy/schema.cedarschema`): entity types, actions and the context
/// record the node fills in. Policy directories ship an identical copy.
pub const SCHEMA: &str = include_str!("../schema.cedarschema");
