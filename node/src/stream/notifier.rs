//! [`Notifier`]: wakes the long-polling `/sync` requests of the users a committed write concerns.
//!
//! One `watch` channel per user that has ever synced (or been woken), holding the last stream
//! position that concerned the user; plus one global channel with the committed head, for
//! requests that wait for anything (ephemeral data such as typing).

use std::collections::HashMap;
use std::sync::Mutex;

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

use crate::sync::lock;

/// Wakes waiting `/sync` requests.
#[derive(Debug)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, watch::Sender<i64>>>,
    head: watch::Sender<i64>,
}

impl Notifier {
    pub(crate) fn new(head: i64) -> Self {
        Notifier {
            users: Mutex::new(HashMap::new()),
            head: watch::Sender::new(head),
        }
    }

    /// A receiver of the positions that concern `user`.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<i64> {
        let mut users = lock(&self.users);
        match users.get(user) {
            Some(sender) => sender.subscribe(),
            None => {
                let sender = watch::Sender::new(0);
                let receiver = sender.subscribe();
                users.insert(user.to_owned(), sender);
                receiver
            }
        }
    }

    /// Marks `pos` as concerning each of `users`, waking their waiting requests.
    pub fn wake(&self, users: &[OwnedUserId], pos: i64) {
        if users.is_empty() {
            return;
        }
        let users_map = lock(&self.users);
        for user in users {
            if let Some(sender) = users_map.get(user) {
                sender.send_if_modified(|last| {
                    if *last < pos {
                        *last = pos;
                        true
                    } else {
                        false
                    }
                });
            }
        }
    }

    /// Wakes every waiting request without a stream change (typing notifications).
    pub fn wake_all_for(&self, users: &[OwnedUserId]) {
        let users_map = lock(&self.users);
        for user in users {
            if let Some(sender) = users_map.get(user) {
                sender.send_modify(|_| {});
            }
        }
    }

    /// Publishes the committed head.
    pub(crate) fn advance(&self, head: i64) {
        self.head.send_replace(head);
    }

    /// A receiver of the committed head.
    pub fn head(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }
}
