//! Stream tokens as clients see them.
//!
//! A `/sync` token is `s<pos>_<typing>`: everything up to stream position `pos` was reported,
//! and typing up to serial `typing` (typing is not persisted; its serials start from the clock at
//! each start, so a token from before a restart at worst reports the current typing once more).
//! When the sync stopped delivering to-device messages at its bound, with more waiting, the token
//! is `s<pos>_<typing>_<stream>_<id>`: the last one delivered (`userdata::ToDeviceCursor`). A pagination token
//! (`prev_batch`, `/messages` `start`/`end`) is `t<pos>`: the point just after the event at
//! position `pos`. Both parse as a position, so a `/sync` `next_batch` can be used as `from` in
//! `/messages`.

use super::error::MatrixError;

/// A `/sync` position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncToken {
    pub(crate) pos: i64,
    pub(crate) typing: u64,
    pub(crate) to_device: Option<crate::userdata::ToDeviceCursor>,
}

impl SyncToken {
    pub(crate) fn parse(token: &str) -> Result<Self, MatrixError> {
        let bad = || MatrixError::InvalidParam(format!("invalid since token {token:?}"));
        let rest = token.strip_prefix('s').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('_').collect();
        let to_device = match parts.as_slice() {
            [_, _] => None,
            [_, _, stream, id] => Some(crate::userdata::ToDeviceCursor {
                stream: stream.parse().map_err(|_| bad())?,
                id: id.parse().map_err(|_| bad())?,
            }),
            _ => return Err(bad()),
        };
        Ok(SyncToken {
            pos: parts[0].parse().map_err(|_| bad())?,
            typing: parts[1].parse().map_err(|_| bad())?,
            to_device,
        })
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}_{}", self.pos, self.typing)?;
        if let Some(c) = self.to_device {
            write!(f, "_{}_{}", c.stream, c.id)?;
        }
        Ok(())
    }
}

/// A pagination token for position `pos`.
pub(crate) fn pagination(pos: i64) -> String {
    format!("t{pos}")
}

/// The position of a pagination or `/sync` token.
pub(crate) fn position(token: &str) -> Result<i64, MatrixError> {
    let bad = || MatrixError::InvalidParam(format!("invalid pagination token {token:?}"));
    if let Some(pos) = token.strip_prefix('t') {
        return pos.parse().map_err(|_| bad());
    }
    SyncToken::parse(token).map(|t| t.pos).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_tokens_round_trip_and_serve_as_pagination_tokens() {
        let token = SyncToken {
            pos: 42,
            typing: 7,
            to_device: None,
        };
        assert_eq!(token.to_string(), "s42_7");
        assert_eq!(SyncToken::parse("s42_7").unwrap(), token);
        assert_eq!(position("s42_7").unwrap(), 42);
        let more = SyncToken {
            to_device: Some(crate::userdata::ToDeviceCursor { stream: 40, id: 9 }),
            ..token
        };
        assert_eq!(more.to_string(), "s42_7_40_9");
        assert_eq!(SyncToken::parse("s42_7_40_9").unwrap(), more);
        assert_eq!(position("s42_7_40_9").unwrap(), 42);
        assert_eq!(position(&pagination(9)).unwrap(), 9);
    }

    #[test]
    fn malformed_tokens_are_invalid_params() {
        for bad in [
            "",
            "s",
            "s1",
            "x1_2",
            "s1_x",
            "tabc",
            "t",
            "s1_2_3",
            "s1_2_3_x",
            "s1_2_3_4_5",
        ] {
            assert!(
                matches!(position(bad), Err(MatrixError::InvalidParam(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
