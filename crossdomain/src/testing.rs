//! Test helpers: a [`Fetch`] answering from a table (and counting requests), and a domain with
//! its own ed25519 key that publishes and signs like a node.

use std::collections::HashMap;
use std::sync::Mutex;

use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, sign_json};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};

use crate::fetch::{Fetch, FetchFailure, FetchFuture};

#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) answers: Mutex<HashMap<String, Vec<u8>>>,
    pub(crate) requests: Mutex<Vec<String>>,
}

impl Table {
    pub(crate) fn put(&self, url: &str, body: Vec<u8>) {
        self.answers.lock().unwrap().insert(url.to_owned(), body);
    }

    pub(crate) fn count(&self, url: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|u| *u == url)
            .count()
    }
}

impl Fetch for Table {
    fn get<'a>(&'a self, url: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            self.requests.lock().unwrap().push(url.to_owned());
            self.answers
                .lock()
                .unwrap()
                .get(url)
                .cloned()
                .ok_or_else(|| FetchFailure::Failed(format!("404 for {url}").into()))
        })
    }
}

/// A domain's signing key.
pub(crate) struct Domain {
    pub(crate) name: String,
    pub(crate) key: Ed25519KeyPair,
}

impl Domain {
    pub(crate) fn new(name: &str, version: &str) -> Self {
        let der = Ed25519KeyPair::generate();
        Self {
            name: name.to_owned(),
            key: Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap(),
        }
    }

    pub(crate) fn sign(&self, object: &mut CanonicalJsonObject) {
        sign_json(&self.name, &self.key, object).unwrap();
    }

    /// The key document of `/_matrix/key/v2/server`, self-signed.
    pub(crate) fn key_document(&self) -> Vec<u8> {
        let id = format!("ed25519:{}", self.key.version());
        let public =
            Base64::<ruma::serde::base64::Standard, _>::new(self.key.public_key().to_vec());
        let v = serde_json::json!({
            "server_name": self.name,
            "valid_until_ts": 4_000_000_000_000u64,
            "old_verify_keys": {},
            "verify_keys": {id: {"key": public.encode()}},
        });
        let mut o: CanonicalJsonObject = serde_json::from_value(v).unwrap();
        self.sign(&mut o);
        serde_json::to_vec(&o).unwrap()
    }
}

/// A string value.
pub(crate) fn s(v: &str) -> CanonicalJsonValue {
    CanonicalJsonValue::String(v.to_owned())
}
