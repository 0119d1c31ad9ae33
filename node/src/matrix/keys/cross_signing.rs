//! `POST /keys/device_signing/upload` and `POST /keys/signatures/upload`: a user's
//! cross-signing keys (master, self-signing, user-signing) and the signatures made with them,
//! over [`CrossSigning`](crate::userdata::Keys::cross_signing).
//!
//! Replacing stored keys needs user-interactive authentication with the account password; the
//! first upload, or the same keys again, needs none. A refused signature does not fail the
//! request: it is listed in `failures`, by user and key ID.

use axum::extract::State;
use ruma::api::client::keys::{upload_signatures, upload_signing_keys};

use super::super::error::{MatrixError, MatrixResult, RumaResponse, signature_failure};
use super::super::extract::Ruma;
use crate::node::Node;
use crate::userdata::CrossSigningError;

pub(crate) async fn upload_signing_keys(
    State(node): State<Node>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> MatrixResult<upload_signing_keys::v3::Response> {
    let (caller, body) = (&req.caller, &req.body);
    let cross_signing = node.userdata().keys().cross_signing();
    let checked = cross_signing
        .check(
            &caller.user_id,
            body.master_key.as_ref(),
            body.self_signing_key.as_ref(),
            body.user_signing_key.as_ref(),
        )
        .await
        .map_err(refused)?;
    if checked.replaces_keys {
        node.accounts()
            .check_password_uia(caller, body.auth.as_ref())
            .await?;
    }
    cross_signing.store(checked).await?;
    Ok(RumaResponse(upload_signing_keys::v3::Response::new()))
}

pub(crate) async fn upload_signatures(
    State(node): State<Node>,
    req: Ruma<upload_signatures::v3::Request>,
) -> MatrixResult<upload_signatures::v3::Response> {
    let cross_signing = node.userdata().keys().cross_signing();
    let refused = cross_signing
        .upload_signatures(&req.caller.user_id, &req.body.signed_keys)
        .await?;
    let mut resp = upload_signatures::v3::Response::new();
    for (user, by_key) in refused {
        let mut failures = std::collections::BTreeMap::new();
        for (key_id, failure) in by_key {
            failures.insert(key_id, signature_failure(failure)?);
        }
        resp.failures.insert(user, failures);
    }
    Ok(RumaResponse(resp))
}

/// The answer to a refused key upload.
fn refused(e: CrossSigningError) -> MatrixError {
    match e {
        CrossSigningError::InvalidKey { .. } => MatrixError::InvalidParam(e.to_string()),
        CrossSigningError::InvalidSignature(message) => MatrixError::InvalidSignature(message),
        CrossSigningError::MissingMaster => MatrixError::MissingParam("master_key"),
        CrossSigningError::NamedLikeADevice => {
            MatrixError::Forbidden("a cross-signing key may not be named like one of your devices")
        }
        CrossSigningError::Store(e) => MatrixError::Store(e),
    }
}
