//! The account store's test bodies ([`AccountStore`] over a [`Db`] of either backend).

use super::Place;
use crate::store::accounts::{AccountStore, NewAccount, NewDevice};

async fn open(place: &Place) -> anyhow::Result<(super::Opened, AccountStore)> {
    let opened = place.open().await?;
    let accounts = AccountStore::new(opened.matrix_db());
    Ok((opened, accounts))
}

fn alice() -> NewAccount<'static> {
    NewAccount {
        localpart: "alice",
        password_hash: Some("$argon2id$stub"),
        external_subject: None,
    }
}

fn device<'a>(id: &'a str, hash: &'a [u8; 32]) -> NewDevice<'a> {
    NewDevice {
        device_id: id,
        display_name: Some("laptop"),
        token_hash: hash,
    }
}

pub(super) async fn a_localpart_or_subject_is_taken_once(place: Place) -> anyhow::Result<()> {
    let (_opened, s) = open(&place).await?;
    assert!(s.create_account(alice(), None, 1).await?);
    assert!(!s.create_account(alice(), None, 2).await?);
    let linked = NewAccount {
        localpart: "bob",
        password_hash: None,
        external_subject: Some("user://idp.example.org/bob"),
    };
    assert!(s.create_account(linked, None, 3).await?);
    let again = NewAccount {
        localpart: "bob2",
        ..linked
    };
    assert!(!s.create_account(again, None, 4).await?);
    assert!(s.account("bob2").await?.is_none());
    assert_eq!(
        s.localpart_for_subject("user://idp.example.org/bob")
            .await?
            .as_deref(),
        Some("bob")
    );
    let rec = s.account("alice").await?.expect("alice");
    assert_eq!(rec.password_hash.as_deref(), Some("$argon2id$stub"));
    assert_eq!(rec.external_subject, None);
    assert_eq!(rec.created_at, 1);
    assert!(s.account("carol").await?.is_none());
    Ok(())
}

pub(super) async fn a_new_login_on_a_device_replaces_its_token(place: Place) -> anyhow::Result<()> {
    let (_opened, s) = open(&place).await?;
    let (t1, t2, t3) = ([1; 32], [2; 32], [3; 32]);
    assert!(
        s.create_account(alice(), Some(device("DEV1", &t1)), 1)
            .await?
    );
    assert!(s.token_owner(&t1).await?.is_some());
    assert!(s.login_device("alice", device("DEV1", &t2), 2).await?);
    assert!(s.token_owner(&t1).await?.is_none());
    let owner = s.token_owner(&t2).await?.expect("owner of t2");
    assert_eq!(
        (owner.localpart.as_str(), owner.device_id.as_str()),
        ("alice", "DEV1")
    );
    assert!(s.login_device("alice", device("DEV2", &t3), 3).await?);
    let ids: Vec<String> = s
        .devices("alice")
        .await?
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, ["DEV1", "DEV2"]);
    assert!(!s.login_device("nobody", device("X", &[9; 32]), 4).await?);
    assert!(s.token_owner(&[9; 32]).await?.is_none());
    Ok(())
}

pub(super) async fn deleting_devices_revokes_their_tokens(place: Place) -> anyhow::Result<()> {
    let (_opened, s) = open(&place).await?;
    let (t1, t2, t3, t4) = ([1; 32], [2; 32], [3; 32], [4; 32]);
    s.create_account(alice(), Some(device("DEV1", &t1)), 1)
        .await?;
    s.login_device("alice", device("DEV2", &t2), 2).await?;
    s.login_device("alice", device("DEV3", &t3), 3).await?;
    s.login_device("alice", device("DEV4", &t4), 4).await?;
    // Cached before the deletion: the deletion drops the cache entry too.
    assert!(s.token_owner(&t1).await?.is_some());
    s.delete_device("alice", "DEV1").await?;
    assert!(s.token_owner(&t1).await?.is_none());
    assert!(s.token_owner(&t2).await?.is_some());
    s.delete_devices("alice", &["DEV2", "NOSUCH", "DEV3"])
        .await?;
    assert!(s.token_owner(&t2).await?.is_none());
    assert!(s.token_owner(&t3).await?.is_none());
    assert_eq!(s.devices("alice").await?.len(), 1);
    s.delete_all_devices("alice").await?;
    assert!(s.token_owner(&t4).await?.is_none());
    assert!(s.devices("alice").await?.is_empty());
    assert!(s.account("alice").await?.is_some());
    Ok(())
}

pub(super) async fn device_names_and_data_survive_reopen(place: Place) -> anyhow::Result<()> {
    let (opened, s) = open(&place).await?;
    let t1 = [1; 32];
    s.create_account(alice(), Some(device("DEV1", &t1)), 1)
        .await?;
    assert!(
        s.set_device_display_name("alice", "DEV1", Some("phone"))
            .await?
    );
    assert!(
        !s.set_device_display_name("alice", "NOSUCH", Some("x"))
            .await?
    );
    opened.close().await;

    let (_opened, s) = open(&place).await?;
    let dev = s.device("alice", "DEV1").await?.expect("DEV1");
    assert_eq!(dev.display_name.as_deref(), Some("phone"));
    // A new login on an existing device keeps its name.
    s.login_device("alice", device("DEV1", &[2; 32]), 2).await?;
    let dev = s.device("alice", "DEV1").await?.expect("DEV1");
    assert_eq!(dev.display_name.as_deref(), Some("phone"));
    assert!(s.set_device_display_name("alice", "DEV1", None).await?);
    assert_eq!(
        s.device("alice", "DEV1").await?.expect("DEV1").display_name,
        None
    );
    assert!(s.device("alice", "NOSUCH").await?.is_none());
    Ok(())
}
