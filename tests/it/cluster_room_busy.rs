//! A room whose writes keep losing (`RoomError::Busy`, `node/src/rooms/mod.rs`): two nodes that
//! build an event on the same predecessor cannot both commit it (the unique `events_chain`
//! index); the loser reloads the room and builds again, up to 16 attempts
//! (`CHAIN_ATTEMPTS`), then answers 503 `M_UNKNOWN` ("busy with writes on other nodes; retry").
//!
//! The contention is forced from a test SQL connection: a trigger on `events` refuses every
//! insert into one room with the error the index raises when another node won (a unique
//! violation of `events_chain`), counting the refusals. The client gets the 503 after 16
//! attempts (the node's log line), nothing of the refused send is stored, and once the room is
//! free the same transaction, retried on either node, is sent once.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::cluster::cluster;
use crate::matrix_cluster::alice_and_bob;
use crate::support::matrix::{
    assert_error, bodies, ok, put, send_path, send_text, text, whole_history,
};

/// Makes every insert into the rooms listed in `busy_rooms` fail as a lost `events_chain` race.
const BUSY: &str = r#"
CREATE SEQUENCE busy_attempts;
CREATE TABLE busy_rooms (room_id TEXT PRIMARY KEY);
CREATE FUNCTION busy_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.room_id IN (SELECT room_id FROM busy_rooms) THEN
        PERFORM nextval('busy_attempts');
        RAISE EXCEPTION 'duplicate key value violates unique constraint "events_chain"'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'events_chain';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER busy_chain BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION busy_chain();
"#;

#[tokio::test]
async fn a_room_whose_writes_keep_losing_answers_503_after_16_attempts_and_then_serves() {
    let mut c = cluster(2).await;
    let (alice, bob, room) = alice_and_bob(&c.nodes[0], &c.nodes[1]).await;
    send_text(&c.nodes[0], &alice.token, &room, "t0", "before").await;

    let mut db = PgConnection::connect(&c.db).await.expect("connect");
    sqlx::raw_sql(BUSY).execute(&mut db).await.expect("trigger");
    sqlx::query("INSERT INTO busy_rooms VALUES ($1)")
        .bind(&room)
        .execute(&mut db)
        .await
        .expect("busy room");

    let refused = put(
        &c.nodes[1],
        &send_path(&room, "t1"),
        &bob.token,
        &text("lost"),
    )
    .await;
    assert_error(&refused, 503, "M_UNKNOWN");
    let message = refused.1["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("busy with writes on other nodes"),
        "the room is busy, not the database down: {message}"
    );
    // Each attempt built a new event that the database refused (once, or twice: a group that
    // fails without savepoints runs again with them); the node counts its attempts.
    let refusals: i64 = sqlx::query_scalar("SELECT last_value FROM busy_attempts")
        .fetch_one(&mut db)
        .await
        .expect("attempts");
    assert!((16..=32).contains(&refusals), "{refusals} refused inserts");
    let line = c.nodes[1]
        .wait_for_log("room moved on other nodes at every attempt")
        .await;
    assert!(
        line.contains("attempt=16"),
        "CHAIN_ATTEMPTS attempts: {line}"
    );
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);

    // The room is free again: the retried transaction (on either node) is sent once, and the
    // refused attempts left nothing behind.
    sqlx::query("DELETE FROM busy_rooms")
        .execute(&mut db)
        .await
        .expect("free the room");
    db.close().await.expect("close");
    let sent = ok(put(n1, &send_path(&room, "t1"), &bob.token, &text("lost")).await);
    let again = ok(put(n2, &send_path(&room, "t1"), &bob.token, &text("lost")).await);
    assert_eq!(
        sent["event_id"], again["event_id"],
        "one event for the transaction"
    );
    let history = whole_history(n2, &alice.token, &room).await;
    assert_eq!(bodies(&history), ["before", "lost"]);
}
