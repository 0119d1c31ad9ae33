//! Device-list changes that come from memberships (Client-Server API, "Tracking the device list
//! for a user"): between two stream positions, the users who now share an encrypted room with a
//! user (their devices must be fetched: `changed`), and those who no longer share any (`left`).
//!
//! A room is encrypted once it has `m.room.encryption` state; sharing it means both are joined.
//! The answer is worked out from the current memberships, with the position of each one's last
//! change, and the position of each room's encryption event (read by `memberships.rs`):
//!
//! - `changed`: users joined to an encrypted room the user is joined to, where the user joined,
//!   they joined, or the room became encrypted in the window. Someone who already shared another
//!   encrypted room is listed too (harmless: the client fetches their devices again).
//! - `left`: users who left an encrypted room of the user's, or were in one the user left, in the
//!   window, and share no encrypted room with the user at its end.
//!
//! The user never appears in either (their own devices are listed in `changed` by key changes
//! only). A membership or encryption that changed again after the window is not known within it:
//! it counts as still shared (not `left`) and not as newly shared (not `changed`), and the window
//! that holds the later change reports the outcome. So successive `/sync`s name a user in the
//! answer whose timeline holds the latest change of their sharing.

use std::collections::BTreeSet;

use ruma::{OwnedUserId, UserId};

use super::Keys;
use crate::store::StoreError;

/// Users whose devices a client must fetch again, and users it need no longer track.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceListChanges {
    /// Sorted, none of them in `left`.
    pub changed: Vec<OwnedUserId>,
    /// Sorted.
    pub left: Vec<OwnedUserId>,
}

impl DeviceListChanges {
    /// These changes with users whose keys changed added to `changed` (unless in `left`: they
    /// share no encrypted room any more).
    pub fn with_key_changes(mut self, keys: Vec<OwnedUserId>) -> Self {
        self.changed.extend(keys);
        self.changed.sort_unstable();
        self.changed.dedup();
        self.changed
            .retain(|user| self.left.binary_search(user).is_err());
        self
    }
}

/// A membership: joined or not, and the position of its last change.
#[derive(Debug, Clone, Copy)]
struct Membership {
    joined: bool,
    stream: i64,
}

impl Membership {
    fn new(membership: &str, stream: i64) -> Self {
        Membership {
            joined: membership == "join",
            stream,
        }
    }
}

/// One other member of an encrypted room of the user's.
#[derive(Debug)]
struct Shared {
    /// The user's own membership of the room.
    mine: Membership,
    /// The position of the room's encryption event.
    encrypted_at: i64,
    other: OwnedUserId,
    theirs: Membership,
}

impl Keys {
    /// The device-list changes of `user` in `(since, upto]` that come from memberships.
    pub async fn shared_room_changes(
        &self,
        user: &UserId,
        since: i64,
        upto: i64,
    ) -> Result<DeviceListChanges, StoreError> {
        let shared: Vec<Shared> = self
            .memberships
            .encrypted_room_members(user, since)
            .await?
            .into_iter()
            .map(|m| Shared {
                mine: Membership::new(&m.mine.0, m.mine.1),
                encrypted_at: m.encrypted_at,
                other: m.other,
                theirs: Membership::new(&m.theirs.0, m.theirs.1),
            })
            .collect();
        Ok(changes(&shared, since, upto))
    }

    /// What `GET /keys/changes` answers for `user` between `since` and `upto`: key changes and
    /// membership changes. `upto` is taken no further than the stream's visible position (the
    /// one a `/sync` answers up to): a client's token past it, or a change being committed,
    /// does not widen the answer. A range that is empty then (`since` at or past `upto`)
    /// answers nothing, without reading.
    pub async fn device_list_changes(
        &self,
        user: &UserId,
        since: i64,
        upto: i64,
    ) -> Result<DeviceListChanges, StoreError> {
        let upto = upto.min(self.stream.visible());
        if since >= upto {
            return Ok(DeviceListChanges::default());
        }
        let keys = self.changed_users(user, since, upto).await?;
        Ok(self
            .shared_room_changes(user, since, upto)
            .await?
            .with_key_changes(keys))
    }
}

/// The changes in `(since, upto]` from the user's encrypted rooms and their other members.
fn changes(shared: &[Shared], since: i64, upto: i64) -> DeviceListChanges {
    let in_window = |m: Membership| m.stream > since && m.stream <= upto;
    let mut changed = BTreeSet::new();
    let mut candidates = BTreeSet::new();
    let mut still = BTreeSet::new();
    for s in shared {
        let (mine, theirs) = (s.mine, s.theirs);
        // Possibly sharing at `upto` (a change after it is not known there).
        if (mine.joined || mine.stream > upto) && (theirs.joined || theirs.stream > upto) {
            still.insert(&s.other);
        }
        let known = mine.stream <= upto && theirs.stream <= upto && s.encrypted_at <= upto;
        let began = mine.stream > since || theirs.stream > since || s.encrypted_at > since;
        if known && mine.joined && theirs.joined && began {
            changed.insert(&s.other);
        }
        let they_left = in_window(theirs) && !theirs.joined && (mine.joined || mine.stream > since);
        let i_left = in_window(mine) && !mine.joined && (theirs.joined || theirs.stream > since);
        if they_left || i_left {
            candidates.insert(&s.other);
        }
    }
    DeviceListChanges {
        changed: changed.into_iter().cloned().collect(),
        left: candidates
            .into_iter()
            .filter(|user| !still.contains(user))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use ruma::owned_user_id;

    use super::*;

    const SINCE: i64 = 10;
    const UPTO: i64 = 20;

    fn m(membership: &str, stream: i64) -> Membership {
        Membership::new(membership, stream)
    }

    fn shared(mine: Membership, encrypted_at: i64, other: &str, theirs: Membership) -> Shared {
        Shared {
            mine,
            encrypted_at,
            other: other.try_into().unwrap(),
            theirs,
        }
    }

    fn names(users: &[OwnedUserId]) -> Vec<String> {
        users.iter().map(|u| u.localpart().to_owned()).collect()
    }

    /// `changed` and `left` in `(SINCE, UPTO]`, by localpart.
    fn lists(shared: &[Shared]) -> (Vec<String>, Vec<String>) {
        let c = changes(shared, SINCE, UPTO);
        (names(&c.changed), names(&c.left))
    }

    #[test]
    fn a_join_in_the_window_is_changed_an_older_one_is_not() {
        let (changed, left) = lists(&[
            shared(m("join", 1), 1, "@bob:x", m("join", 15)),
            shared(m("join", 1), 1, "@carol:x", m("join", 5)),
        ]);
        assert_eq!(changed, ["bob"]);
        assert!(left.is_empty());
    }

    #[test]
    fn joining_a_room_or_its_encryption_lists_every_member() {
        let (changed, _) = lists(&[
            shared(m("join", 12), 1, "@bob:x", m("join", 5)),
            shared(m("join", 1), 18, "@carol:x", m("join", 5)),
        ]);
        assert_eq!(changed, ["bob", "carol"]);
    }

    #[test]
    fn leaving_the_only_shared_room_is_left_unless_another_is_shared() {
        let (changed, left) = lists(&[
            // Bob left room 1 and shares nothing else; Carol left room 1 but shares room 2.
            shared(m("join", 1), 1, "@bob:x", m("leave", 15)),
            shared(m("join", 1), 1, "@carol:x", m("ban", 16)),
            shared(m("join", 2), 2, "@carol:x", m("join", 2)),
        ]);
        assert!(changed.is_empty());
        assert_eq!(left, ["bob"]);
    }

    #[test]
    fn leaving_a_room_leaves_its_members_who_share_no_other() {
        let (changed, left) = lists(&[
            shared(m("leave", 14), 1, "@bob:x", m("join", 2)),
            // Dave had left before the window: not in the room when the user left.
            shared(m("leave", 14), 1, "@dave:x", m("leave", 8)),
            shared(m("leave", 14), 1, "@carol:x", m("join", 2)),
            shared(m("join", 3), 3, "@carol:x", m("join", 3)),
        ]);
        assert!(changed.is_empty());
        assert_eq!(left, ["bob"]);
    }

    #[test]
    fn a_change_after_the_window_is_left_to_the_next_one() {
        let (changed, left) = lists(&[
            // Bob left in the window and joined again after it: not left yet.
            shared(m("join", 1), 1, "@bob:x", m("join", 25)),
            // Carol left in the window, then her membership changed again after it.
            shared(m("join", 1), 1, "@carol:x", m("leave", 25)),
            // Erin joined a room that became encrypted after the window.
            shared(m("join", 1), 22, "@erin:x", m("join", 15)),
        ]);
        assert!(changed.is_empty());
        assert!(left.is_empty());
    }

    #[test]
    fn key_changes_join_changed_but_never_those_who_left() {
        let c = DeviceListChanges {
            changed: vec![owned_user_id!("@carol:x")],
            left: vec![owned_user_id!("@bob:x")],
        }
        .with_key_changes(vec![
            owned_user_id!("@bob:x"),
            owned_user_id!("@alice:x"),
            owned_user_id!("@carol:x"),
        ]);
        assert_eq!(names(&c.changed), ["alice", "carol"]);
        assert_eq!(names(&c.left), ["bob"]);
    }

    mod cases {
        use ruma::user_id;

        use super::super::super::super::test_support::{Fixture, fixture_on};
        use crate::store::db::on_db;
        use crate::store::tests::Place;

        async fn encrypt(f: &Fixture, room: &str, pos: i64) {
            on_db!(&f.db, |e| sqlx::query(
                "INSERT INTO room_state (room_id, type, state_key, event_id, stream) \
                 VALUES ($1, 'm.room.encryption', '', $2, $3)",
            )
            .bind(room)
            .bind(format!("$enc{pos}"))
            .bind(pos)
            .execute(e)
            .await
            .unwrap()
            .rows_affected());
        }

        async fn set(f: &Fixture, room: &str, user: &str, membership: &str, pos: i64) {
            on_db!(&f.db, |e| sqlx::query(
                "UPDATE memberships SET membership = $1, stream = $2 \
                 WHERE room_id = $3 AND user_id = $4",
            )
            .bind(membership)
            .bind(pos)
            .bind(room)
            .bind(user)
            .execute(e)
            .await
            .unwrap()
            .rows_affected());
        }

        pub(super) async fn the_store_reads_encrypted_rooms_only(
            place: Place,
        ) -> anyhow::Result<()> {
            let f = fixture_on(place).await?;
            let keys = f.data.keys();
            let (alice, bob, carol) = (
                user_id!("@alice:example.com"),
                user_id!("@bob:example.com"),
                user_id!("@carol:example.com"),
            );
            for (room, user) in [
                ("!e:example.com", alice),
                ("!e:example.com", bob),
                ("!p:example.com", alice),
                ("!p:example.com", carol),
            ] {
                f.join(room, user.as_str()).await;
            }
            encrypt(&f, "!e:example.com", 1).await;
            set(&f, "!e:example.com", bob.as_str(), "join", 5).await;
            set(&f, "!p:example.com", carol.as_str(), "join", 6).await;
            let c = keys.shared_room_changes(alice, 2, 10).await?;
            assert_eq!(c.changed, [bob], "carol joined a room without encryption");
            assert!(c.left.is_empty());

            set(&f, "!e:example.com", bob.as_str(), "leave", 12).await;
            set(&f, "!p:example.com", carol.as_str(), "leave", 13).await;
            let c = keys.shared_room_changes(alice, 10, 20).await?;
            assert!(c.changed.is_empty());
            assert_eq!(c.left, [bob]);
            assert_eq!(
                keys.shared_room_changes(bob, 10, 20).await?.left,
                [alice],
                "seen from the one who left"
            );
            Ok(())
        }
    }

    crate::store::tests::on_both_backends!(cases: [the_store_reads_encrypted_rooms_only]);
}
