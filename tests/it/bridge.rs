//! The bridge between data objects and rooms: a WebSocket hyperty and a
//! Matrix client exchange messages through one room, in both directions, and the history is
//! visible through `/messages`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::client::RECV_TIMEOUT;
use crate::support::matrix::{
    Served, V3, bodies, get, join, next_batch, ok, post, register, send_text, sync, urlencode,
    user_id, whole_history,
};
use crate::support::{DOMAIN, Rt, TestNode, sm_endpoint};

/// The room alias of a data object `comm://<DOMAIN>/<id>`.
fn object_alias(id: &str) -> String {
    format!("#_hyperty_comm.{id}:{DOMAIN}")
}

/// A hyperty on the bus: a runtime with one allocated address, subscribed to `object`'s changes.
async fn subscribed_hyperty(node: &TestNode, name: &str, object: &str) -> (Rt, String) {
    let mut rt = Rt::open(node, name).await;
    let hyperty = rt.allocate(1).await.remove(0);
    let answer = rt
        .request(
            json!({"type": "subscribe", "from": hyperty, "to": sm_endpoint(),
            "body": {"resources": [format!("{object}/changes")]}}),
        )
        .await;
    assert_eq!(answer["body"]["code"], 200, "{answer}");
    (rt, hyperty)
}

/// Resolves the object's room alias, waiting for the bridge to create it. The bridge creates
/// rooms after routing, on its own task, and nobody is woken by that: this polls the alias (the
/// state the node publishes), bounded by [`RECV_TIMEOUT`]; the pause sets only how soon it
/// notices.
async fn room_of(node: &TestNode, token: &str, id: &str) -> String {
    room_within(node, token, id, RECV_TIMEOUT).await
}

/// As [`room_of`], waiting up to `wait`.
pub(crate) async fn room_within(
    node: &impl Served,
    token: &str,
    id: &str,
    wait: Duration,
) -> String {
    let path = format!("{V3}/directory/room/{}", urlencode(&object_alias(id)));
    let deadline = Instant::now() + wait;
    loop {
        let (status, body) = get(node, &path, token).await;
        if status == 200 {
            return body["room_id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never created the room of {id}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The room's events, oldest first, once `done` holds for them. `token`'s user is in the room:
/// the history is read again at each change for that user (a `/sync` long-poll wakes), up to
/// [`RECV_TIMEOUT`].
async fn history_once(
    node: &impl Served,
    token: &str,
    room: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + RECV_TIMEOUT;
    // The token is taken first, so nothing committed after the check below can be missed.
    let mut since = next_batch(&sync(node, token, None).await);
    loop {
        let events = whole_history(node, token, room).await;
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "room {room} never got there: {events:?}"
        );
        let answer = ok(get(
            node,
            &format!("{V3}/sync?since={since}&timeout=5000"),
            token,
        )
        .await);
        since = next_batch(&answer);
    }
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The messages of a room, oldest first, once there are at least `n` `m.room.message`s.
pub(crate) async fn wait_for_messages(
    node: &impl Served,
    token: &str,
    room: &str,
    n: usize,
) -> Vec<Value> {
    let events = history_once(node, token, room, |e| {
        of_type(e, "m.room.message").len() >= n
    })
    .await;
    of_type(&events, "m.room.message")
        .into_iter()
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_hyperty_and_a_matrix_user_talk_through_the_objects_room() {
    let node = TestNode::spawn().await;
    let object = format!("comm://{DOMAIN}/chat-1");
    let (mut rt, hyperty) = subscribed_hyperty(&node, "rt-bridge", &object).await;
    let alice = register(&node, "alice").await;
    let room = room_of(&node, &alice, "chat-1").await;

    // The hyperty's virtual user is in the room; the Matrix user joins by the object's alias.
    ok(post(
        &node,
        &format!("{V3}/join/{}", urlencode(&object_alias("chat-1"))),
        &alice,
        &json!({}),
    )
    .await);
    let (_, members) = get(&node, &format!("{V3}/rooms/{room}/joined_members"), &alice).await;
    let joined: Vec<&String> = members["joined"].as_object().unwrap().keys().collect();
    assert_eq!(joined.len(), 2, "{members}");
    assert!(
        joined.iter().any(|u| u.starts_with("@_hyperty_")),
        "{members}"
    );

    // Bus → room: an update carrying a text message becomes an m.room.message of the virtual user.
    rt.send(
        &json!({"id": 10, "type": "update", "from": hyperty, "to": format!("{object}/changes"),
        "body": {"value": {"msgtype": "m.text", "body": "hello from the bus"}}}),
    )
    .await;
    let events = wait_for_messages(&node, &alice, &room, 1).await;
    assert_eq!(bodies(&events), ["hello from the bus"]);
    assert!(
        events[0]["sender"]
            .as_str()
            .unwrap()
            .starts_with("@_hyperty_")
    );

    // Room → bus: alice's message reaches the subscribed hyperty as an update of the object.
    let event_id = send_text(&node, &alice, &room, "t1", "hello from matrix").await;
    let got = rt.recv().await;
    assert_eq!(got["type"], "update");
    assert_eq!(got["from"], json!(object));
    assert_eq!(got["to"], json!(format!("{object}/changes")));
    assert_eq!(got["body"]["value"]["body"], "hello from matrix");
    assert_eq!(got["body"]["source"], json!(format!("@alice:{DOMAIN}")));
    assert_eq!(got["body"]["eventId"], json!(event_id));

    // Both directions are in the room's history, in order, once each: alice's message, which
    // the bridge put on the bus, does not come back as a second event. (A marker from the bus,
    // bridged after anything alice's message caused, shows that nothing else came.)
    rt.send(
        &json!({"id": 12, "type": "update", "from": hyperty, "to": format!("{object}/changes"),
        "body": {"value": {"msgtype": "m.text", "body": "marker"}}}),
    )
    .await;
    let events = wait_for_messages(&node, &alice, &room, 3).await;
    assert_eq!(
        bodies(&events),
        ["hello from the bus", "hello from matrix", "marker"]
    );
}

#[tokio::test]
async fn other_updates_are_kept_as_rethink_update_events() {
    let node = TestNode::spawn().await;
    let object = format!("comm://{DOMAIN}/doc-9");
    let (mut rt, hyperty) = subscribed_hyperty(&node, "rt-doc", &object).await;
    let alice = register(&node, "alice").await;
    let room = room_of(&node, &alice, "doc-9").await;
    join(&node, &alice, &room).await;
    let body = json!({"attribute": "participants.bob", "value": {"status": "away"}});
    rt.send(&json!({"id": 11, "type": "update", "from": hyperty,
        "to": format!("{object}/changes"), "body": body}))
        .await;
    let events = history_once(&node, &alice, &room, |e| {
        !of_type(e, "org.rethink.update").is_empty()
    })
    .await;
    assert_eq!(of_type(&events, "org.rethink.update")[0]["content"], body);
}

#[tokio::test]
async fn the_reserved_namespace_is_closed_to_clients() {
    let node = TestNode::spawn().await;
    let alice = register(&node, "alice").await;
    let room = crate::support::matrix::create_room(&node, &alice, &json!({})).await;
    let answer = crate::support::matrix::put(
        &node,
        &format!("{V3}/directory/room/{}", urlencode(&object_alias("mine"))),
        &alice,
        &json!({"room_id": room}),
    )
    .await;
    crate::support::matrix::assert_error(&answer, 400, "M_EXCLUSIVE");
}

/// Allocates a data object address `comm://<DOMAIN>/<id>` to `rt`.
async fn allocate_object(rt: &mut Rt) -> String {
    let answer = rt
        .request(
            json!({"type": "create", "from": format!("{}/address-allocation", rt.url),
            "to": crate::support::allocation_endpoint(),
            "body": {"scheme": "comm", "value": {"number": 1}}}),
        )
        .await;
    assert_eq!(answer["body"]["code"], 200, "{answer}");
    answer["body"]["value"]["allocated"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The `<id>` of an address `scheme://<DOMAIN>/<id>`.
fn id_of(address: &str) -> &str {
    address.rsplit('/').next().unwrap()
}

/// The virtual user of a hyperty whose id needs no escaping (allocated UUIDs).
fn virtual_user(hyperty: &str) -> String {
    format!("@_hyperty_{}:{DOMAIN}", id_of(hyperty))
}

/// A room's current state event of `kind` (state key `""`), whole (with its sender).
async fn state_event(node: &TestNode, token: &str, room: &str, kind: &str) -> Value {
    let (status, state) = get(node, &format!("{V3}/rooms/{room}/state"), token).await;
    assert_eq!(status, 200, "{state}");
    state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == "")
        .unwrap_or_else(|| panic!("no {kind} in {state}"))
        .clone()
}

#[tokio::test]
async fn an_objects_create_makes_its_room_before_anyone_subscribes() {
    let node = TestNode::spawn().await;
    let mut rt = Rt::open(&node, "rt-reporter").await;
    let reporter = rt.allocate(1).await.remove(0);
    let object = allocate_object(&mut rt).await;
    let value = json!({"name": "Team chat", "reporter": reporter, "data": {"topic": "plans"}});
    rt.send(&json!({"id": 20, "type": "create", "from": reporter, "to": object,
        "body": {"value": value, "schema": "hyperty-catalogue://example.com/.well-known/dataschema/Communication"}}))
        .await;

    // Nobody subscribed: the room exists, a Matrix user finds it by the alias and joins it.
    let alice = register(&node, "alice").await;
    let room = room_of(&node, &alice, id_of(&object)).await;
    ok(post(
        &node,
        &format!("{V3}/join/{}", urlencode(&object_alias(id_of(&object)))),
        &alice,
        &json!({}),
    )
    .await);

    // Created by the reporter's virtual user, named after the object, with its initial value.
    let create = state_event(&node, &alice, &room, "m.room.create").await;
    assert_eq!(create["sender"], json!(virtual_user(&reporter)), "{create}");
    let name = state_event(&node, &alice, &room, "m.room.name").await;
    assert_eq!(name["content"]["name"], "Team chat");
    let described = state_event(&node, &alice, &room, "org.rethink.object").await;
    assert_eq!(described["sender"], json!(virtual_user(&reporter)));
    assert_eq!(described["content"]["url"], json!(object));
    assert_eq!(described["content"]["reporter"], json!(reporter));
    assert_eq!(described["content"]["value"], value);
    assert_eq!(
        described["content"]["schema"],
        "hyperty-catalogue://example.com/.well-known/dataschema/Communication"
    );
    let (_, members) = get(&node, &format!("{V3}/rooms/{room}/joined_members"), &alice).await;
    let joined: BTreeSet<&str> = members["joined"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [user_id("alice"), virtual_user(&reporter)];
    assert_eq!(
        joined,
        expected.iter().map(String::as_str).collect(),
        "{members}"
    );

    // A later subscriber joins that same room; the reporter's updates reach it.
    let (_observer_rt, observer) = subscribed_hyperty(&node, "rt-observer", &object).await;
    rt.send(
        &json!({"id": 21, "type": "update", "from": reporter, "to": format!("{object}/changes"),
        "body": {"value": {"msgtype": "m.text", "body": "first"}}}),
    )
    .await;
    let events = wait_for_messages(&node, &alice, &room, 1).await;
    assert_eq!(bodies(&events), ["first"]);
    assert_eq!(room_of(&node, &alice, id_of(&object)).await, room);
    let (_, members) = get(&node, &format!("{V3}/rooms/{room}/joined_members"), &alice).await;
    assert!(
        members["joined"]
            .as_object()
            .unwrap()
            .contains_key(&virtual_user(&observer)),
        "{members}"
    );
}

#[tokio::test]
async fn the_sync_managers_invitation_creates_the_room_for_its_reporter() {
    let node = TestNode::spawn().await;
    let mut reporter_rt = Rt::open(&node, "rt-sm-reporter").await;
    let reporter = reporter_rt.allocate(1).await.remove(0);
    let object = allocate_object(&mut reporter_rt).await;
    let mut observer_rt = Rt::open(&node, "rt-sm-observer").await;
    let observer = observer_rt.allocate(1).await.remove(0);

    // reTHINK's "Observer Invitation": from the object's subscription handler, naming the reporter.
    let invitation = json!({"id": 30, "type": "create", "from": format!("{object}/subscription"),
        "to": observer, "body": {"source": reporter, "value": {"name": "Shared doc"}}});
    reporter_rt.send(&invitation).await;
    let got = observer_rt.recv().await;
    assert_eq!(got["type"], "create", "{got}");
    assert_eq!(got["body"]["source"], json!(reporter));

    let alice = register(&node, "alice").await;
    let room = room_of(&node, &alice, id_of(&object)).await;
    let (status, _) = post(
        &node,
        &format!("{V3}/rooms/{room}/join"),
        &alice,
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let create = state_event(&node, &alice, &room, "m.room.create").await;
    assert_eq!(create["sender"], json!(virtual_user(&reporter)), "{create}");
    let name = state_event(&node, &alice, &room, "m.room.name").await;
    assert_eq!(name["content"]["name"], "Shared doc");
}

#[tokio::test]
async fn a_create_for_another_runtimes_object_or_reporter_makes_no_room() {
    let node = TestNode::spawn().await;
    let mut owner_rt = Rt::open(&node, "rt-owner").await;
    let owner = owner_rt.allocate(1).await.remove(0);
    let owned = allocate_object(&mut owner_rt).await;
    let mut other_rt = Rt::open(&node, "rt-other").await;
    let other = other_rt.allocate(1).await.remove(0);
    let mine = allocate_object(&mut other_rt).await;
    let later = allocate_object(&mut other_rt).await;

    // Another runtime's object, and this runtime's object claiming another runtime's hyperty as
    // its reporter: both are routed (the owner receives them), neither creates a room.
    other_rt
        .send(
            &json!({"id": 40, "type": "create", "from": other, "to": owned,
            "body": {"value": {"name": "stolen"}}}),
        )
        .await;
    assert_eq!(owner_rt.recv().await["id"], 40);
    other_rt
        .send(
            &json!({"id": 41, "type": "create", "from": format!("{mine}/subscription"),
            "to": owner, "body": {"source": owner, "value": {"name": "forged"}}}),
        )
        .await;
    assert_eq!(owner_rt.recv().await["id"], 41);
    // The same runtime's next, proper create: once its room exists, the bridge has handled the
    // two before it (one session's messages are routed in order, the bridge handles in order).
    other_rt
        .send(
            &json!({"id": 42, "type": "create", "from": other, "to": later,
            "body": {"value": {"name": "fine"}}}),
        )
        .await;
    let alice = register(&node, "alice").await;
    room_of(&node, &alice, id_of(&later)).await;
    for object in [&owned, &mine] {
        let path = format!(
            "{V3}/directory/room/{}",
            urlencode(&object_alias(id_of(object)))
        );
        let answer = get(&node, &path, &alice).await;
        crate::support::matrix::assert_error(&answer, 404, "M_NOT_FOUND");
    }
}

/// The state a failed bridge write leaves: the object's room made, with its alias, and no
/// `bridged_objects` row naming it (the database failed after the room's creation). The
/// object is not refused for good (its alias taken, every later create would be refused): its
/// next subscriber and updater find that room by its alias and the bridge row is written.
#[tokio::test]
async fn an_objects_room_whose_bridge_row_was_not_stored_is_found_by_its_alias() {
    let mut data_dir = None;
    let node = TestNode::spawn_with(|c| data_dir = Some(c.data_dir.clone())).await;
    let db = data_dir.unwrap().join("rethink.db");
    let mut rt = Rt::open(&node, "rt-half-made").await;
    let reporter = rt.allocate(1).await.remove(0);
    let object = allocate_object(&mut rt).await;
    let changes = format!("{object}/changes");
    rt.send(
        &json!({"id": 50, "type": "create", "from": reporter, "to": object,
        "body": {"value": {"name": "Half made", "reporter": reporter}}}),
    )
    .await;
    let alice = register(&node, "alice").await;
    let room = room_of(&node, &alice, id_of(&object)).await;
    join(&node, &alice, &room).await;
    // Handled after the create (one task, in order): the create's bridge row is written by then.
    rt.send(
        &json!({"id": 51, "type": "update", "from": reporter, "to": changes,
        "body": {"value": {"msgtype": "m.text", "body": "before"}}}),
    )
    .await;
    wait_for_messages(&node, &alice, &room, 1).await;
    drop(rt);

    // The bridge row goes, as if its write had failed; a restart empties the bridge's memory.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let deleted = sqlx::query("DELETE FROM bridged_objects WHERE object_url = ?")
        .bind(&object)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    conn.close().await.unwrap();
    let node = node.restart().await;

    // A new subscriber joins that room; its update lands there (refused with 400 before: the
    // alias in use).
    let (mut rt, hyperty) = subscribed_hyperty(&node, "rt-after", &object).await;
    rt.send(
        &json!({"id": 52, "type": "update", "from": hyperty, "to": changes,
        "body": {"value": {"msgtype": "m.text", "body": "after"}}}),
    )
    .await;
    let events = wait_for_messages(&node, &alice, &room, 2).await;
    assert_eq!(bodies(&events), ["before", "after"]);
    assert_eq!(events[1]["sender"], json!(virtual_user(&hyperty)));
    assert_eq!(room_of(&node, &alice, id_of(&object)).await, room);
    let name = state_event(&node, &alice, &room, "m.room.name").await;
    assert_eq!(name["content"]["name"], "Half made");
}
