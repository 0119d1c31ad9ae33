//! Every reTHINK example message of `testdata/rethink` (see its README): valid ones parse and
//! keep all their fields on a round trip, `invalid-*` ones are refused.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::PathBuf;

use rethink_proto::{Envelope, Frame, parse_frame};
use serde_json::Value;

fn vectors() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/rethink");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "json").then(|| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "vectors found: {}", out.len());
    out
}

#[test]
fn valid_vectors_round_trip_with_every_field() {
    for (name, text) in vectors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("invalid-"))
    {
        let env = Envelope::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let original: Value = serde_json::from_str(&text).unwrap();
        let mut framed: Value = serde_json::from_str(&env.frame(1)).unwrap();
        assert_eq!(framed["seq"], 1);
        framed.as_object_mut().unwrap().remove("seq");
        assert_eq!(framed, original, "{name}: round trip keeps everything");
        assert_eq!(env.from(), original["from"].as_str().unwrap(), "{name}");
        let to: Vec<&str> = env.to().collect();
        match &original["to"] {
            Value::String(s) => assert_eq!(to, [s.as_str()], "{name}"),
            Value::Array(a) => assert_eq!(to.len(), a.len(), "{name}"),
            other => panic!("{name}: to is {other}"),
        }
        assert_eq!(env.kind().as_str(), original["type"].as_str().unwrap());
        assert_eq!(
            serde_json::from_str::<Value>(env.id_json()).unwrap(),
            original["id"]
        );
    }
}

#[test]
fn invalid_vectors_are_refused_with_their_id_salvaged() {
    let mut seen = 0;
    for (name, text) in vectors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("invalid-"))
    {
        match parse_frame(&text) {
            Frame::Single(Err(rej)) => {
                let original: Value = serde_json::from_str(&text).unwrap();
                let id: Value = serde_json::from_str(rej.id_json.as_deref().unwrap()).unwrap();
                assert_eq!(id, original["id"], "{name}");
            }
            other => panic!("{name} must be refused: {other:?}"),
        }
        seen += 1;
    }
    assert!(seen >= 2);
}

#[test]
fn response_vectors_read_desc_and_code() {
    let (_, text) = vectors()
        .into_iter()
        .find(|(n, _)| n == "response-error-desc.json")
        .expect("vector");
    let body = Envelope::parse(&text).unwrap().response_body().unwrap();
    assert_eq!(body.code.as_u16(), 500);
    assert_eq!(
        body.description.as_deref(),
        Some("Message blocked by policy")
    );
}
