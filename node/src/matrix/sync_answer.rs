//! [`SyncAnswer`], the body of a `/sync` answer, serialized here rather than by ruma's generic
//! response code: the same fields, names, order and omissions as ruma's `sync_events::v3`
//! response (a test compares the bytes), written into a buffer sized for a typical answer at
//! once. `/sync` is the most frequent request of a busy node; growing the buffer from empty
//! took a reallocation and a copy per doubling of every answer.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use ruma::OneTimeKeyAlgorithm;
use ruma::UInt;
use ruma::api::client::sync::sync_events::DeviceLists;
use ruma::api::client::sync::sync_events::v3::{
    self, GlobalAccountData, Presence, Rooms, ToDevice,
};
use serde::Serialize;

use super::error::json_answer;

/// Bytes reserved for an answer before serializing it: a few events' worth.
const INITIAL_CAPACITY: usize = 4096;

/// A `/sync` response, answered as JSON with the CORS headers.
#[derive(Debug)]
pub(crate) struct SyncAnswer(pub(crate) v3::Response);

/// ruma's response body, borrowed (see `ruma_client_api::sync::sync_events::v3::Response`).
#[derive(Serialize)]
struct Body<'a> {
    next_batch: &'a str,
    #[serde(skip_serializing_if = "Rooms::is_empty")]
    rooms: &'a Rooms,
    #[serde(skip_serializing_if = "Presence::is_empty")]
    presence: &'a Presence,
    #[serde(skip_serializing_if = "GlobalAccountData::is_empty")]
    account_data: &'a GlobalAccountData,
    #[serde(skip_serializing_if = "ToDevice::is_empty")]
    to_device: &'a ToDevice,
    #[serde(skip_serializing_if = "DeviceLists::is_empty")]
    device_lists: &'a DeviceLists,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    device_one_time_keys_count: &'a BTreeMap<OneTimeKeyAlgorithm, UInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_unused_fallback_key_types: &'a Option<Vec<OneTimeKeyAlgorithm>>,
}

impl SyncAnswer {
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let r = &self.0;
        let body = Body {
            next_batch: &r.next_batch,
            rooms: &r.rooms,
            presence: &r.presence,
            account_data: &r.account_data,
            to_device: &r.to_device,
            device_lists: &r.device_lists,
            device_one_time_keys_count: &r.device_one_time_keys_count,
            device_unused_fallback_key_types: &r.device_unused_fallback_key_types,
        };
        let mut bytes = Vec::with_capacity(INITIAL_CAPACITY);
        serde_json::to_writer(&mut bytes, &body)?;
        Ok(bytes)
    }
}

impl IntoResponse for SyncAnswer {
    fn into_response(self) -> Response {
        json_answer(self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use ruma::api::OutgoingResponseExt as _;
    use ruma::api::client::sync::sync_events::v3::{JoinedRoom, LeftRoom};
    use ruma::events::AnySyncTimelineEvent;
    use ruma::serde::Raw;
    use ruma::{owned_room_id, owned_user_id};
    use serde_json::json;

    use axum::http::StatusCode;

    use super::*;

    fn ruma_bytes(response: v3::Response) -> Vec<u8> {
        response
            .try_into_http_response::<Vec<u8>>()
            .expect("ruma serializes")
            .into_body()
    }

    #[test]
    fn an_empty_answer_is_written_as_ruma_writes_it() {
        let response = v3::Response::new("s7_0".to_owned());
        let ours = SyncAnswer(response.clone()).to_json().expect("serializes");
        assert_eq!(ours, ruma_bytes(response));
        assert_eq!(ours, br#"{"next_batch":"s7_0"}"#);
    }

    #[test]
    fn a_full_answer_is_written_as_ruma_writes_it() {
        let mut response = v3::Response::new("s42_3".to_owned());
        let event: Raw<AnySyncTimelineEvent> = Raw::new(&json!({
            "type": "m.room.message", "event_id": "$e", "sender": "@a:x",
            "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "hi \"there\""},
        }))
        .expect("raw")
        .cast_unchecked();
        let mut joined = JoinedRoom::new();
        joined.timeline.events.push(event);
        joined.timeline.limited = true;
        joined.timeline.prev_batch = Some("p41".to_owned());
        response.rooms.join.insert(owned_room_id!("!r:x"), joined);
        response
            .rooms
            .leave
            .insert(owned_room_id!("!l:x"), LeftRoom::new());
        response.device_lists.changed.push(owned_user_id!("@b:x"));
        response.device_lists.left.push(owned_user_id!("@c:x"));
        response
            .device_one_time_keys_count
            .insert(OneTimeKeyAlgorithm::SignedCurve25519, UInt::from(5u32));
        response.device_unused_fallback_key_types =
            Some(vec![OneTimeKeyAlgorithm::SignedCurve25519]);
        let ours = SyncAnswer(response.clone()).to_json().expect("serializes");
        assert!(ours.len() > 200, "{}", String::from_utf8_lossy(&ours));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&ruma_bytes(response))
        );
    }

    #[tokio::test]
    async fn the_answer_is_json_with_the_cors_headers() {
        let answer = SyncAnswer(v3::Response::new("s1_0".to_owned())).into_response();
        assert_eq!(answer.status(), StatusCode::OK);
        let headers = answer.headers();
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.contains_key("access-control-allow-origin"));
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .expect("body");
        assert_eq!(&body[..], br#"{"next_batch":"s1_0"}"#);
    }
}
