//! The room engine refuses a [`MatrixPermit`] that is not for the action, user and room it
//! performs.

use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, RoomId, UserId, owned_server_name};
use serde_json::value::to_raw_value;
use serde_json::{Map, json};
use tempfile::TempDir;

use super::create::{CreateRoom, Preset};
use super::{NewEvent, RoomCaches, RoomError, Rooms, ServerKey};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{MatrixPermit, MatrixRequest, PolicyPoint};
use crate::store::rooms::RoomStore;
use crate::store::sqlite::SqliteStore;
use crate::stream::StreamWriter;

struct Engine {
    rooms: Rooms,
    policy: PolicyPoint,
    _dir: TempDir,
}

async fn engine() -> Engine {
    let dir = TempDir::new().unwrap();
    let config = Config::for_tests(dir.path(), "example.com");
    let policy = PolicyPoint::new(&config.policy, Arc::new(Metrics::new())).unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let (stream, _task) = StreamWriter::start(store.stream_pool().clone())
        .await
        .unwrap();
    let server_name = owned_server_name!("example.com");
    let key = ServerKey::load_or_generate(&store.pool().clone().into(), server_name.clone())
        .await
        .unwrap();
    let room_store = RoomStore::new(store.pool().clone());
    let caches = RoomCaches::new(
        stream.visible(),
        room_store.all_memberships().await.unwrap(),
    );
    Engine {
        rooms: Rooms::new(
            room_store,
            stream,
            key,
            server_name,
            caches,
            std::time::Duration::from_secs(24 * 60 * 60),
        ),
        policy,
        _dir: dir,
    }
}

impl Engine {
    /// A permit from the enforcement point (no policies: everything is permitted).
    fn permit(&self, action: &'static str, user: &UserId, room: Option<&RoomId>) -> MatrixPermit {
        let room_name = room.map_or("", RoomId::as_str);
        let req = MatrixRequest {
            action,
            user,
            identity: None,
            room: room_name,
            room_id: room,
            bridged: false,
            invitee: None,
            size: 0,
        };
        self.policy
            .decide_matrix("example.com", &req, || 1)
            .unwrap()
    }

    async fn create(&self, creator: &UserId) -> OwnedRoomId {
        let permit = self.permit("matrix:createRoom", creator, None);
        self.rooms
            .create_room(&permit, creator, spec())
            .await
            .unwrap()
    }
}

fn spec() -> CreateRoom {
    CreateRoom {
        version: None,
        preset: Preset::PrivateChat,
        name: None,
        topic: None,
        alias: None,
        invite: Vec::new(),
        is_direct: false,
        initial_state: Vec::new(),
        creation_content: None,
        power_level_override: None,
        creator_profile: Map::new(),
    }
}

fn message() -> NewEvent {
    NewEvent {
        kind: TimelineEventType::RoomMessage,
        content: to_raw_value(&json!({"msgtype": "m.text", "body": "hi"})).unwrap(),
        state_key: None,
        redacts: None,
    }
}

fn topic() -> NewEvent {
    NewEvent {
        kind: TimelineEventType::RoomTopic,
        content: to_raw_value(&json!({"topic": "t"})).unwrap(),
        state_key: Some(String::new()),
        redacts: None,
    }
}

fn refused<T: std::fmt::Debug>(result: Result<T, RoomError>) {
    assert!(
        matches!(result, Err(RoomError::Forbidden(_))),
        "expected a refusal, got {result:?}"
    );
}

#[tokio::test]
async fn a_permit_is_only_for_its_action_user_and_room() {
    let e = engine().await;
    let alice = <&UserId>::try_from("@alice:example.com").unwrap();
    let bob = <&UserId>::try_from("@bob:example.com").unwrap();
    let (a, b) = (e.create(alice).await, e.create(alice).await);

    // Another room: a permit to send in A does not send in B, where Alice may send.
    let send_in_a = e.permit("matrix:send", alice, Some(&a));
    refused(e.rooms.send(&send_in_a, &b, alice, message(), None).await);
    // Another action: a permit to send in B does not change B's state, nor a membership.
    let send_in_b = e.permit("matrix:send", alice, Some(&b));
    refused(e.rooms.send(&send_in_b, &b, alice, topic(), None).await);
    let member = to_raw_value(&json!({"membership": "leave"})).unwrap();
    refused(
        e.rooms
            .set_membership(&send_in_b, &b, alice, alice, member.clone())
            .await,
    );
    // Another user: Bob's permit does not let Alice send.
    let bobs = e.permit("matrix:send", bob, Some(&b));
    refused(e.rooms.send(&bobs, &b, alice, message(), None).await);
    // A join permit is for one's own membership, not for inviting someone else.
    let join_b = e.permit("matrix:join", alice, Some(&b));
    refused(
        e.rooms
            .set_membership(&join_b, &b, alice, bob, member.clone())
            .await,
    );
    // A permit to send does not create a room.
    refused(e.rooms.create_room(&send_in_b, alice, spec()).await);

    // The same operations with the right permits succeed.
    e.rooms
        .send(&send_in_b, &b, alice, message(), None)
        .await
        .unwrap();
    let state_in_b = e.permit("matrix:state", alice, Some(&b));
    e.rooms
        .send(&state_in_b, &b, alice, topic(), None)
        .await
        .unwrap();
    let invite_in_b = e.permit("matrix:invite", alice, Some(&b));
    let invite = to_raw_value(&json!({"membership": "invite"})).unwrap();
    e.rooms
        .set_membership(&invite_in_b, &b, alice, bob, invite)
        .await
        .unwrap();
}
