//! Responses: building the node's answers and reading `body` of any response.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::code::Code;
use crate::envelope::{Envelope, ParseError};

/// The body of a `response` message as runtimes write it (`description` or the older `desc`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResponseBody {
    pub code: Code,
    #[serde(default, alias = "desc")]
    pub description: Option<String>,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

/// Builds a `response`: `from` = the request's `to`, `to` = the request's `from`, same `id`.
#[derive(Debug)]
pub struct ResponseBuilder<'a> {
    id_json: &'a str,
    from: &'a str,
    to: &'a str,
    code: Code,
    description: Option<&'a str>,
    value: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Out<'a> {
    id: &'a RawValue,
    #[serde(rename = "type")]
    kind: &'static str,
    from: &'a str,
    to: &'a str,
    body: OutBody<'a>,
}

#[derive(Serialize)]
struct OutBody<'a> {
    code: Code,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a serde_json::Value>,
}

impl<'a> ResponseBuilder<'a> {
    /// A response with explicit addressing. `id_json` is the request's raw `id` (`null` when the
    /// request had none that could be read).
    pub fn new(id_json: &'a str, from: &'a str, to: &'a str, code: Code) -> Self {
        Self {
            id_json,
            from,
            to,
            code,
            description: None,
            value: None,
        }
    }

    /// Sets `body.description`.
    pub fn description(mut self, description: &'a str) -> Self {
        self.description = Some(description);
        self
    }

    /// Sets `body.value`.
    pub fn value(mut self, value: serde_json::Value) -> Self {
        self.value = Some(value);
        self
    }

    /// Serializes the response into an envelope.
    pub fn build(self) -> Result<Envelope, ParseError> {
        let id: &RawValue =
            serde_json::from_str(self.id_json).map_err(|e| ParseError::from_serde(&e))?;
        let out = Out {
            id,
            kind: "response",
            from: self.from,
            to: self.to,
            body: OutBody {
                code: self.code,
                description: self.description,
                value: self.value.as_ref(),
            },
        };
        let text = serde_json::to_string(&out).map_err(|e| ParseError::from_serde(&e))?;
        Envelope::parse_inner(&text, true)
    }
}

impl Envelope {
    /// A response to this message from its first recipient.
    pub fn reply(&self, code: Code) -> ResponseBuilder<'_> {
        ResponseBuilder::new(self.id_json(), self.first_to(), self.from(), code)
    }

    /// Reads the body of a `response` message.
    pub fn response_body(&self) -> Result<ResponseBody, serde_json::Error> {
        self.body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_swaps_addresses_and_echoes_the_id() {
        let req =
            Envelope::parse(r#"{"id":"abc","type":"create","from":"a://d/1","to":"a://d/2"}"#)
                .unwrap();
        let resp = req
            .reply(Code::NOT_FOUND)
            .description("nope")
            .build()
            .unwrap();
        assert_eq!(resp.id_json(), r#""abc""#);
        assert_eq!(resp.from(), "a://d/2");
        assert_eq!(resp.first_to(), "a://d/1");
        let body = resp.response_body().unwrap();
        assert_eq!(body.code, Code::NOT_FOUND);
        assert_eq!(body.description.as_deref(), Some("nope"));
    }

    #[test]
    fn reads_desc_as_description() {
        let text = r#"{"id":"2","type":"response","from":"a://d/2","to":"a://d/1","body":{"code":500,"desc":"blocked"}}"#;
        let body = Envelope::parse(text).unwrap().response_body().unwrap();
        assert_eq!(body.code, Code::INTERNAL);
        assert_eq!(body.description.as_deref(), Some("blocked"));
    }

    #[test]
    fn null_id_only_for_node_built_responses() {
        let resp = ResponseBuilder::new("null", "mn:/session", "runtime://d/rt", Code::BAD_REQUEST)
            .build()
            .unwrap();
        assert_eq!(resp.id_json(), "null");
    }
}
