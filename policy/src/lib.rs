//! rethink-policy: the policy decision point of the node (DESIGN.md section 6).
//!
//! Not built yet: this crate will hold the Cedar-based decision point, pure and synchronous, that
//! the bus asks before routing any message. Until it exists, the bus applies only its built-in
//! checks (anti-spoofing, sizes, rates) and permits everything else; see `rethink_node::bus::permit`.
