//! Redactions: whether a sender may redact an event of the room, and the target's redacted
//! JSON (what the store writes in place of the target when the redaction is committed).

use ruma::OwnedEventId;
use ruma::UserId;
use ruma::canonical_json::{CanonicalJsonValue, RedactedBecause, redact};

use super::{RoomError, RoomState, Rooms, power};

/// An accepted redaction's target and its redacted JSON.
pub(super) struct Redaction {
    pub(super) target: OwnedEventId,
    pub(super) json: String,
}

impl Rooms {
    /// Checks that `sender` may redact `target` (its own event, or with the redact power level),
    /// and returns the target's redacted JSON.
    pub(super) async fn check_redaction(
        &self,
        room: &RoomState,
        sender: &UserId,
        target: &ruma::EventId,
    ) -> Result<Redaction, RoomError> {
        let stored = self.inner.store.signed_event(target.as_str()).await?;
        let Some((target_room, target_sender, json)) = stored else {
            return Err(RoomError::NotFound(format!("unknown event {target}")));
        };
        if target_room != room.room_id.as_str() {
            return Err(RoomError::NotFound(format!("unknown event {target}")));
        }
        if target_sender != sender.as_str() {
            let levels = power::Levels::of(room);
            if levels.user(sender) < levels.redact {
                return Err(RoomError::Forbidden(
                    "you may only redact your own events".to_owned(),
                ));
            }
        }
        let object: CanonicalJsonValue =
            serde_json::from_str(&json).map_err(|source| RoomError::Json {
                what: "a stored event",
                source,
            })?;
        let CanonicalJsonValue::Object(object) = object else {
            return Err(RoomError::StoredNotAnObject(target.to_owned()));
        };
        let redacted =
            redact(object, &room.rules.redaction, None::<RedactedBecause>).map_err(|source| {
                RoomError::Redaction {
                    event: target.to_owned(),
                    source,
                }
            })?;
        let json = serde_json::to_string(&redacted).map_err(|source| RoomError::Json {
            what: "a redacted event",
            source,
        })?;
        Ok(Redaction {
            target: target.to_owned(),
            json,
        })
    }
}
