//! [`ToDevice`]: to-device messages (`PUT /sendToDevice/{type}/{txnId}`), stored per recipient
//! device at the stream position of their send, delivered by `/sync` and deleted once the device
//! syncs with a token at or past them. A transaction ID is applied once per sending device.
//!
//! One `/sync` delivers [`MAX_PER_SYNC`] of them at most, in send order: when more wait, its
//! token carries a [`Cursor`] (the last one delivered), the next sync deletes up to it and
//! delivers what follows, and so on; so what one sync loads stays bounded however many were
//! sent to the device.
//!
//! Recipients are local devices that exist when the message is sent (`*` means all of a user's
//! devices); others are dropped, as there is no federation yet.

use std::collections::BTreeSet;

use ruma::api::client::to_device::send_event_to_device::v3::Messages;
use ruma::events::AnyToDeviceEvent;
use ruma::serde::Raw;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{DeviceId, OwnedServerName, TransactionId, UserId};
use serde_json::value::RawValue;

use super::{Write, commit, raw, to_json};
use crate::store::StoreError;
use crate::store::accounts::AccountStore;
use crate::store::db::{Conn, Db, on_conn, on_db};
use crate::stream::StreamWriter;

/// Most to-device messages one `/sync` delivers (Synapse's figure).
pub const MAX_PER_SYNC: usize = 100;

/// The last to-device message a `/sync` delivered when more were waiting: its stream position
/// and row id (messages are delivered in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub stream: i64,
    pub id: i64,
}

/// The to-device store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ToDevice {
    db: Db,
    stream: StreamWriter,
    accounts: AccountStore,
    server_name: OwnedServerName,
}

impl ToDevice {
    pub(super) fn new(
        db: Db,
        stream: StreamWriter,
        accounts: AccountStore,
        server_name: OwnedServerName,
    ) -> Self {
        Self {
            db,
            stream,
            accounts,
            server_name,
        }
    }

    /// Sends `messages` of `event_type` from `sender`'s device under `txn`; wakes the
    /// recipients. A transaction already applied changes nothing.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn: &TransactionId,
        event_type: &str,
        messages: &Messages,
    ) -> Result<(), StoreError> {
        if self.txn_seen(sender, sender_device, txn).await? {
            return Ok(());
        }
        let mut rows = Vec::new();
        let mut wake = BTreeSet::new();
        for (user, targets) in messages {
            if user.server_name() != self.server_name {
                continue;
            }
            let devices = self.accounts.devices(user.localpart()).await?;
            for (target, content) in targets {
                let json = event_json(event_type, sender, content.json())?;
                for device in &devices {
                    let addressed = match target {
                        DeviceIdOrAllDevices::AllDevices => true,
                        DeviceIdOrAllDevices::DeviceId(id) => id.as_str() == device.device_id,
                    };
                    if addressed {
                        rows.push((user.to_string(), device.device_id.clone(), json.clone()));
                        wake.insert(user.clone());
                    }
                }
            }
        }
        let op = Send {
            sender: sender.as_str().to_owned(),
            sender_device: sender_device.as_str().to_owned(),
            txn: txn.as_str().to_owned(),
            rows,
        };
        commit(&self.stream, op, wake.into_iter().collect()).await?;
        Ok(())
    }

    async fn txn_seen(
        &self,
        sender: &UserId,
        device: &DeviceId,
        txn: &TransactionId,
    ) -> Result<bool, StoreError> {
        let row: Option<String> = on_db!(&self.db, |e| sqlx::query_scalar(
            "SELECT txn_id FROM to_device_txns \
             WHERE sender = $1 AND device_id = $2 AND txn_id = $3",
        )
        .bind(sender.as_str())
        .bind(device.as_str())
        .bind(txn.as_str())
        .fetch_optional(e)
        .await?);
        Ok(row.is_some())
    }

    /// Deletes the device's messages the previous sync delivered (up to `cursor` when it
    /// stopped early, else all at or below `since`) and returns the next ones up to `upto`, in
    /// stream order, [`MAX_PER_SYNC`] at most; with the cursor of the last one when more wait.
    pub(super) async fn take(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: i64,
        cursor: Option<Cursor>,
        upto: i64,
    ) -> Result<(Vec<Raw<AnyToDeviceEvent>>, Option<Cursor>), StoreError> {
        if let Some(c) = cursor {
            on_db!(&self.db, |e| sqlx::query(
                "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 \
                 AND (stream < $3 OR (stream = $3 AND id <= $4))",
            )
            .bind(user.as_str())
            .bind(device.as_str())
            .bind(c.stream)
            .bind(c.id)
            .execute(e)
            .await?
            .rows_affected());
        } else if since > 0 {
            on_db!(&self.db, |e| sqlx::query(
                "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream <= $3",
            )
            .bind(user.as_str())
            .bind(device.as_str())
            .bind(since)
            .execute(e)
            .await?
            .rows_affected());
        }
        let limit = i64::try_from(MAX_PER_SYNC + 1).unwrap_or(i64::MAX);
        let mut rows: Vec<(i64, i64, String)> = on_db!(&self.db, |e| sqlx::query_as(
            "SELECT stream, id, json FROM to_device WHERE user_id = $1 AND device_id = $2 \
             AND stream <= $3 ORDER BY stream, id LIMIT $4",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .bind(upto)
        .bind(limit)
        .fetch_all(e)
        .await?);
        let next = if rows.len() > MAX_PER_SYNC {
            rows.truncate(MAX_PER_SYNC);
            rows.last().map(|(stream, id, _)| Cursor {
                stream: *stream,
                id: *id,
            })
        } else {
            None
        };
        let events = rows
            .into_iter()
            .map(|(_, _, json)| raw(json))
            .collect::<Result<_, _>>()?;
        Ok((events, next))
    }
}

/// The event a device receives.
#[derive(serde::Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    sender: &'a UserId,
    content: &'a RawValue,
}

fn event_json(kind: &str, sender: &UserId, content: &RawValue) -> Result<String, StoreError> {
    to_json(&Event {
        kind,
        sender,
        content,
    })
}

/// One sendToDevice transaction: `(user, device, event JSON)` per recipient device.
#[derive(Clone)]
struct Send {
    sender: String,
    sender_device: String,
    txn: String,
    rows: Vec<(String, String, String)>,
}

impl Write for Send {
    async fn apply(self, mut conn: Conn<'_>, pos: i64) -> Result<(), sqlx::Error> {
        let fresh = on_conn!(&mut conn, |e| sqlx::query(
            "INSERT INTO to_device_txns (sender, device_id, txn_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.sender)
        .bind(&self.sender_device)
        .bind(&self.txn)
        .execute(e)
        .await?
        .rows_affected());
        if fresh == 0 {
            return Ok(());
        }
        for (user, device, json) in &self.rows {
            on_conn!(&mut conn, |e| sqlx::query(
                "INSERT INTO to_device (user_id, device_id, stream, json) VALUES ($1, $2, $3, $4)",
            )
            .bind(user)
            .bind(device)
            .bind(pos)
            .bind(json)
            .execute(e)
            .await?
            .rows_affected());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::{device_id, owned_device_id, owned_user_id, user_id};

    use super::super::test_support::fixture_on;
    use super::*;
    use crate::store::accounts::{NewAccount, NewDevice};
    use crate::store::tests::Place;

    /// Creates the account `bob` with the devices `ids` (the recipients of to-device messages).
    async fn bob_with_devices(db: &Db, ids: &[&str]) {
        let accounts = AccountStore::new(db.clone());
        let bob = NewAccount {
            localpart: "bob",
            password_hash: None,
            external_subject: None,
        };
        for (i, id) in ids.iter().enumerate() {
            let device = NewDevice {
                device_id: id,
                display_name: None,
                token_hash: &[u8::try_from(i).unwrap(); 32],
            };
            if i == 0 {
                accounts.create_account(bob, Some(device), 1).await.unwrap();
            } else {
                accounts.login_device("bob", device, 1).await.unwrap();
            }
        }
    }

    mod cases {
        use super::*;

        pub(super) async fn a_transaction_is_delivered_once_and_deleted_after_the_next_sync(
            place: Place,
        ) -> anyhow::Result<()> {
            let f = fixture_on(place).await?;
            bob_with_devices(&f.db, &["B1", "B2"]).await;
            let td = f.data.to_device();
            let content: Raw<_> = Raw::from_json_string(r#"{"n":1}"#.to_owned()).unwrap();
            let messages: Messages = BTreeMap::from([(
                owned_user_id!("@bob:example.com"),
                BTreeMap::from([
                    (
                        DeviceIdOrAllDevices::DeviceId(owned_device_id!("B1")),
                        content.clone(),
                    ),
                    (
                        DeviceIdOrAllDevices::DeviceId(owned_device_id!("GONE")),
                        content,
                    ),
                ]),
            )]);
            let (alice, adev) = (user_id!("@alice:example.com"), device_id!("A"));
            let txn: &TransactionId = "t1".into();
            td.send(alice, adev, txn, "m.test", &messages)
                .await
                .unwrap();
            td.send(alice, adev, txn, "m.test", &messages)
                .await
                .unwrap();
            let upto = f.visible();

            let bob = user_id!("@bob:example.com");
            let (got, more) = td.take(bob, device_id!("B1"), 0, None, upto).await.unwrap();
            assert_eq!(more, None);
            assert_eq!(
                got.len(),
                1,
                "the repeated transaction is not delivered again"
            );
            assert_eq!(
                got[0].get_field::<String>("type").unwrap().as_deref(),
                Some("m.test")
            );
            assert_eq!(
                got[0].get_field::<String>("sender").unwrap().as_deref(),
                Some("@alice:example.com")
            );
            assert!(
                td.take(bob, device_id!("B2"), 0, None, upto)
                    .await
                    .unwrap()
                    .0
                    .is_empty()
            );
            // Until a sync past them, they stay; then they are gone.
            assert_eq!(
                td.take(bob, device_id!("B1"), 0, None, upto)
                    .await
                    .unwrap()
                    .0
                    .len(),
                1
            );
            assert!(
                td.take(bob, device_id!("B1"), upto, None, upto)
                    .await
                    .unwrap()
                    .0
                    .is_empty()
            );
            Ok(())
        }

        pub(super) async fn one_sync_delivers_a_bounded_batch_and_the_next_ones_follow_on(
            place: Place,
        ) -> anyhow::Result<()> {
            let f = fixture_on(place).await?;
            bob_with_devices(&f.db, &["B1"]).await;
            let td = f.data.to_device();
            let (alice, adev) = (user_id!("@alice:example.com"), device_id!("A"));
            let total = 2 * MAX_PER_SYNC + 50;
            for i in 0..total {
                let content: Raw<_> = Raw::from_json_string(format!(r#"{{"n":{i}}}"#)).unwrap();
                let messages: Messages = BTreeMap::from([(
                    owned_user_id!("@bob:example.com"),
                    BTreeMap::from([(
                        DeviceIdOrAllDevices::DeviceId(owned_device_id!("B1")),
                        content,
                    )]),
                )]);
                let txn_id = format!("t{i}");
                let txn: &TransactionId = txn_id.as_str().into();
                td.send(alice, adev, txn, "m.test", &messages)
                    .await
                    .unwrap();
            }
            let upto = f.visible();
            let (bob, b1) = (user_id!("@bob:example.com"), device_id!("B1"));
            let numbers = |got: &[Raw<AnyToDeviceEvent>]| -> Vec<u64> {
                got.iter()
                    .map(|e| {
                        let content: serde_json::Value = e.get_field("content").unwrap().unwrap();
                        content["n"].as_u64().unwrap()
                    })
                    .collect()
            };
            // An initial sync: the first batch, and where it stopped.
            let (first, cursor) = td.take(bob, b1, 0, None, upto).await.unwrap();
            assert_eq!(
                numbers(&first),
                (0..MAX_PER_SYNC as u64).collect::<Vec<_>>()
            );
            let cursor = cursor.expect("more wait");
            // The same token again (its answer was lost): the same batch after it.
            let (second, again) = td.take(bob, b1, upto, Some(cursor), upto).await.unwrap();
            let (retry, _) = td.take(bob, b1, upto, Some(cursor), upto).await.unwrap();
            assert_eq!(numbers(&second), numbers(&retry));
            assert_eq!(
                numbers(&second),
                (MAX_PER_SYNC as u64..2 * MAX_PER_SYNC as u64).collect::<Vec<_>>()
            );
            let (third, last) = td.take(bob, b1, upto, again, upto).await.unwrap();
            assert_eq!(
                numbers(&third),
                (2 * MAX_PER_SYNC as u64..total as u64).collect::<Vec<_>>()
            );
            assert_eq!(last, None, "nothing more waits");
            // The sync after that deletes them all.
            let (none, _) = td.take(bob, b1, upto, None, upto).await.unwrap();
            assert!(none.is_empty());
            Ok(())
        }
    }

    crate::store::tests::on_both_backends!(cases: [
        a_transaction_is_delivered_once_and_deleted_after_the_next_sync,
        one_sync_delivers_a_bounded_batch_and_the_next_ones_follow_on
    ]);
}
