//! `POST /user/{userId}/filter` and `GET /user/{userId}/filter/{filterId}`: sync filters, each
//! readable by its uploader only.

use axum::extract::State;
use ruma::api::client::filter::{create_filter, get_filter};

use super::error::{MatrixError, MatrixResult, RumaResponse};
use super::extract::Ruma;
use super::userdata_routes::only_self;
use crate::node::Node;

pub(crate) async fn create_filter(
    State(node): State<Node>,
    req: Ruma<create_filter::v3::Request>,
) -> MatrixResult<create_filter::v3::Response> {
    only_self(
        &req.caller,
        &req.body.user_id,
        "you can only create filters for yourself",
    )?;
    let filters = node.userdata().filters();
    let id = filters.create(&req.body.user_id, &req.body.filter).await?;
    Ok(RumaResponse(create_filter::v3::Response::new(id)))
}

pub(crate) async fn get_filter(
    State(node): State<Node>,
    req: Ruma<get_filter::v3::Request>,
) -> MatrixResult<get_filter::v3::Response> {
    only_self(
        &req.caller,
        &req.body.user_id,
        "you can only read your own filters",
    )?;
    let filters = node.userdata().filters();
    let filter = filters
        .get(&req.body.user_id, &req.body.filter_id)
        .await?
        .ok_or_else(|| MatrixError::NotFound("no such filter".into()))?;
    Ok(RumaResponse(get_filter::v3::Response::new(filter)))
}
