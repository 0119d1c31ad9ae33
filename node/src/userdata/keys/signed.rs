//! Signed JSON objects of end-to-end encryption (device keys, cross-signing keys): their
//! canonical form, the check of one ed25519 signature, and the merge of stored signatures into
//! an object for `keys/query`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::signatures::{
    SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
};

/// The length of an ed25519 public key.
const ED25519_KEY_LEN: usize = 32;

/// A JSON object, or `None` if `json` is not one (or holds numbers canonical JSON forbids).
pub(super) fn object(json: &str) -> Option<CanonicalJsonObject> {
    serde_json::from_str(json).ok()
}

/// The object as canonical JSON, signatures included.
pub(super) fn canonical(object: &CanonicalJsonObject) -> String {
    CanonicalJsonValue::Object(object.clone()).to_string()
}

/// The signed part of an object: its canonical JSON without `signatures` and `unsigned`.
pub(super) fn signed_part(object: &CanonicalJsonObject) -> Option<String> {
    to_canonical_json_string_for_signing(object).ok()
}

/// Decodes unpadded (or padded) standard base64.
fn base64(s: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// Whether `public_key` (base64) is an ed25519 public key.
pub(super) fn is_ed25519_key(public_key: &str) -> bool {
    base64(public_key).is_some_and(|k| k.len() == ED25519_KEY_LEN)
}

/// The signature `object` carries by `user`'s key `key_id` (`ed25519:<name>`), if any.
pub(super) fn signature<'a>(
    object: &'a CanonicalJsonObject,
    user: &str,
    key_id: &str,
) -> Option<&'a str> {
    match object.get("signatures")? {
        CanonicalJsonValue::Object(by_user) => match by_user.get(user)? {
            CanonicalJsonValue::Object(by_key) => match by_key.get(key_id)? {
                CanonicalJsonValue::String(s) => Some(s),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// Every signature `object` carries by `user`: `(key ID, signature)`.
pub(super) fn signatures_by<'a>(
    object: &'a CanonicalJsonObject,
    user: &str,
) -> Vec<(&'a str, &'a str)> {
    let Some(CanonicalJsonValue::Object(by_user)) = object.get("signatures") else {
        return Vec::new();
    };
    let Some(CanonicalJsonValue::Object(by_key)) = by_user.get(user) else {
        return Vec::new();
    };
    by_key
        .iter()
        .filter_map(|(id, sig)| match sig {
            CanonicalJsonValue::String(s) => Some((id.as_str(), s.as_str())),
            _ => None,
        })
        .collect()
}

/// Whether `signature` (base64) is a valid ed25519 signature of `object`'s signed part by
/// `public_key` (base64).
pub(super) fn verifies(object: &CanonicalJsonObject, public_key: &str, signature: &str) -> bool {
    let (Some(signed), Some(key), Some(sig)) =
        (signed_part(object), base64(public_key), base64(signature))
    else {
        return false;
    };
    verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, &key, &sig, signed.as_bytes())
        .is_ok()
}

/// `json` (a stored object) with the signatures `(signer user, signer key ID, signature)`
/// added to its `signatures`; unchanged without any. `None` if `json` is not an object.
pub(super) fn with_signatures(json: &str, extra: &[(String, String, String)]) -> Option<String> {
    if extra.is_empty() {
        return Some(json.to_owned());
    }
    let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
    let object = value.as_object_mut()?;
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let by_user = signatures.as_object_mut()?;
    for (user, key_id, sig) in extra {
        let by_key = by_user
            .entry(user.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        by_key
            .as_object_mut()?
            .insert(key_id.clone(), serde_json::Value::String(sig.clone()));
    }
    serde_json::to_string(&value).ok()
}

#[cfg(test)]
mod tests {
    use ruma::signatures::{Ed25519KeyPair, KeyPair as _};

    use super::*;

    /// A fresh key pair and its public key in unpadded base64.
    fn key_pair() -> (Ed25519KeyPair, String) {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, "k".to_owned()).unwrap();
        let public = STANDARD_NO_PAD.encode(pair.public_key());
        (pair, public)
    }

    fn sign(pair: &Ed25519KeyPair, object: &CanonicalJsonObject) -> String {
        let signed = signed_part(object).unwrap();
        STANDARD_NO_PAD.encode(pair.sign(signed.as_bytes()).as_bytes())
    }

    #[test]
    fn a_signature_verifies_over_the_signed_part_only() {
        let (pair, public) = key_pair();
        let mut obj = object(r#"{"user_id":"@a:x","keys":{"ed25519:A":"k"}}"#).unwrap();
        let sig = sign(&pair, &obj);
        assert!(verifies(&obj, &public, &sig));
        // Signatures and unsigned data are not signed.
        obj.insert("unsigned".into(), CanonicalJsonValue::Bool(true));
        let with = with_signatures(
            &canonical(&obj),
            &[("@a:x".into(), "ed25519:A".into(), sig.clone())],
        )
        .unwrap();
        let with = object(&with).unwrap();
        assert_eq!(signature(&with, "@a:x", "ed25519:A"), Some(sig.as_str()));
        assert!(verifies(&with, &public, &sig));
        // Anything else is.
        obj.insert("user_id".into(), CanonicalJsonValue::String("@b:x".into()));
        assert!(!verifies(&obj, &public, &sig));
        let (_, other) = key_pair();
        assert!(!verifies(&with, &other, &sig));
        assert!(!verifies(&with, &public, "not base64!"));
    }

    #[test]
    fn only_32_byte_keys_are_ed25519_keys() {
        let (_, public) = key_pair();
        assert!(is_ed25519_key(&public));
        assert!(!is_ed25519_key("c2hvcnQ"));
        assert!(!is_ed25519_key("DEVICEID"));
    }
}
