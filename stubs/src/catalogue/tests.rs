//! The catalogue over a real temporary directory: stubs added, replaced, refused (the previous
//! one stays), removed; the built-in default replaced and restored; retired bytes still found.

use std::path::Path;
use std::sync::Arc;

use super::*;

/// The built-in component with a custom section appended: still valid, other bytes.
fn variant(tag: &str) -> Vec<u8> {
    let mut section = vec![tag.len() as u8];
    section.extend_from_slice(tag.as_bytes());
    let mut bytes = DEFAULT_STUB.to_vec();
    bytes.push(0);
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    bytes
}

fn open(dir: &Path) -> Catalogue {
    Catalogue::open(Some(dir.to_path_buf()), DEFAULT_STUB, Arc::new(Structural)).expect("opens")
}

#[test]
fn without_a_directory_only_the_built_in_default_is_served() {
    let c = Catalogue::open(None, DEFAULT_STUB, Arc::new(Structural)).expect("opens");
    let snap = c.snapshot();
    let names: Vec<&str> = snap.stubs().map(|s| s.name()).collect();
    assert_eq!(names, ["default"]);
    let default = snap.get("default").expect("default");
    assert_eq!(default.origin(), &Origin::BuiltIn);
    assert_eq!(default.sha256(), sha256_hex(DEFAULT_STUB));
    assert_eq!(default.bytes().as_ref(), DEFAULT_STUB);
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    assert!(matches!(
        Catalogue::open(Some(missing), DEFAULT_STUB, Arc::new(Structural)),
        Err(CatalogueError::Dir { .. })
    ));
}

#[test]
fn stubs_are_added_replaced_and_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("chat.wasm"), variant("one")).expect("write");
    std::fs::write(dir.path().join("chat.toml"), "version = \"1.0.0\"").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
    let c = open(dir.path());
    let mut rx = c.subscribe();
    let first = c.snapshot();
    let chat = Arc::clone(first.get("chat").expect("chat served"));
    assert_eq!(chat.version(), "1.0.0");
    assert_eq!(chat.sha256(), sha256_hex(&variant("one")));
    assert!(first.get("notes").is_none());

    // Nothing changed: nothing published.
    let reload = c.reload();
    assert!(reload.changed.is_empty() && reload.refused.is_empty());
    assert!(!rx.has_changed().expect("open"));

    std::fs::write(dir.path().join("chat.wasm"), variant("two-longer")).expect("write");
    let reload = c.reload();
    assert_eq!(reload.changed, ["chat"]);
    assert!(rx.has_changed().expect("open"));
    let second = rx.borrow_and_update().clone();
    assert_eq!(second.generation(), first.generation() + 1);
    let new = second.get("chat").expect("chat served");
    assert_eq!(new.sha256(), sha256_hex(&variant("two-longer")));
    // The replaced bytes stay downloadable by hash, under their own name only.
    assert!(second.by_hash("chat", chat.sha256()).is_some());
    assert!(second.by_hash("other", chat.sha256()).is_none());
    assert!(second.by_hash("chat", new.sha256()).is_some());

    std::fs::remove_file(dir.path().join("chat.wasm")).expect("remove");
    assert_eq!(c.reload().changed, ["chat"]);
    assert!(c.snapshot().get("chat").is_none());
    assert!(c.snapshot().get("default").is_some());
}

#[test]
fn a_refused_replacement_leaves_the_previous_version_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("chat.wasm"), variant("good")).expect("write");
    let c = open(dir.path());
    let good = c
        .snapshot()
        .get("chat")
        .expect("served")
        .sha256()
        .to_owned();

    // A core module, then garbage: refused, each once, the good version stays.
    std::fs::write(dir.path().join("chat.wasm"), b"\0asm\x01\0\0\0").expect("write");
    let reload = c.reload();
    assert!(reload.changed.is_empty());
    match &reload.refused[..] {
        [
            (
                name,
                StubRefused::Invalid {
                    source: ValidationError::NotComponent,
                    ..
                },
            ),
        ] => {
            assert_eq!(name, "chat");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.snapshot().get("chat").expect("served").sha256(), good);
    assert!(
        c.reload().refused.is_empty(),
        "an unchanged refused file is not read again"
    );

    // Invalid metadata refuses the stub too.
    std::fs::write(dir.path().join("chat.wasm"), variant("better")).expect("write");
    std::fs::write(dir.path().join("chat.toml"), "version = 3").expect("write");
    let reload = c.reload();
    assert!(matches!(
        &reload.refused[..],
        [(_, StubRefused::Meta { .. })]
    ));
    assert_eq!(c.snapshot().get("chat").expect("served").sha256(), good);

    // A new stub that is refused is simply not served.
    std::fs::write(dir.path().join("broken.wasm"), b"not wasm").expect("write");
    let reload = c.reload();
    assert_eq!(reload.refused.len(), 1);
    assert!(c.snapshot().get("broken").is_none());
}

#[test]
fn a_default_in_the_directory_replaces_the_built_in_one_until_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = open(dir.path());
    assert_eq!(
        c.snapshot().get("default").expect("default").origin(),
        &Origin::BuiltIn
    );
    std::fs::write(dir.path().join("default.wasm"), variant("operator")).expect("write");
    c.reload();
    let snap = c.snapshot();
    let default = snap.get("default").expect("default");
    assert_eq!(default.sha256(), sha256_hex(&variant("operator")));
    assert!(matches!(default.origin(), Origin::File(_)));
    std::fs::remove_file(dir.path().join("default.wasm")).expect("remove");
    c.reload();
    assert_eq!(
        c.snapshot().get("default").expect("default").origin(),
        &Origin::BuiltIn
    );
}

#[test]
fn files_whose_name_cannot_be_a_stub_are_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("a.b.wasm"), variant("x")).expect("write");
    let c = open(dir.path());
    assert_eq!(c.snapshot().stubs().count(), 1);
}
