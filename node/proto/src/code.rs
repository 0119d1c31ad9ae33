//! Response codes: the HTTP-style numbers reTHINK puts in `body.code`.

use serde::{Deserialize, Serialize};

/// A reTHINK response code. Only the codes the node emits have names; any other number read from
/// a runtime is kept as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Code(pub u16);

impl Code {
    pub const CONTINUE: Code = Code(100);
    pub const OK: Code = Code(200);
    pub const BAD_REQUEST: Code = Code(400);
    pub const UNAUTHORIZED: Code = Code(401);
    pub const FORBIDDEN: Code = Code(403);
    pub const NOT_FOUND: Code = Code(404);
    pub const TIMEOUT: Code = Code(408);
    pub const CONFLICT: Code = Code(409);
    pub const TOO_LARGE: Code = Code(413);
    pub const TOO_MANY_REQUESTS: Code = Code(429);
    pub const INTERNAL: Code = Code(500);
    pub const BAD_GATEWAY: Code = Code(502);
    pub const UNAVAILABLE: Code = Code(503);
    pub const GATEWAY_TIMEOUT: Code = Code(504);

    /// The number.
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether the code reports success (1xx or 2xx).
    pub fn is_success(self) -> bool {
        self.0 < 300
    }
}
