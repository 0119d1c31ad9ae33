//! `GET /_matrix/client/versions`: the spec versions this node speaks.

use ruma::api::MatrixVersion;
use ruma::api::client::discovery::get_supported_versions;

use super::error::{MatrixResult, RumaResponse};
use super::extract::Ruma;

/// Advertised spec versions: v1.1 to v1.12, the client-side behaviour of the endpoints served.
const VERSIONS: [MatrixVersion; 12] = [
    MatrixVersion::V1_1,
    MatrixVersion::V1_2,
    MatrixVersion::V1_3,
    MatrixVersion::V1_4,
    MatrixVersion::V1_5,
    MatrixVersion::V1_6,
    MatrixVersion::V1_7,
    MatrixVersion::V1_8,
    MatrixVersion::V1_9,
    MatrixVersion::V1_10,
    MatrixVersion::V1_11,
    MatrixVersion::V1_12,
];

pub(crate) async fn get_versions(
    _req: Ruma<get_supported_versions::Request>,
) -> MatrixResult<get_supported_versions::Response> {
    let versions = VERSIONS
        .iter()
        .filter_map(|v| v.as_str())
        .map(str::to_owned)
        .collect();
    Ok(RumaResponse(get_supported_versions::Response::new(
        versions,
    )))
}
