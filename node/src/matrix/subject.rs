//! [`localpart_for_subject`]: the Matrix localpart of a verified reTHINK identity
//! `user://<idp>/<sub>` (a JWT login).

use std::fmt::Write as _;

/// The localpart a verified identity `user://<idp>/<sub>` gets: `<sub>` (percent-decoded), mapped
/// as the Matrix spec's appendix "Mapping from other character sets" recommends, with `=` escaped
/// too so that no two `sub`s share a localpart: `A`-`Z` become `_a`-`_z`, `_` becomes `__`,
/// `a-z 0-9 - . /` stay, any other byte (`=` included) becomes `=xx` (lowercase hex).
///
/// The identity provider is not part of it: the same `sub` at two issuers maps to one localpart,
/// which belongs to whichever logged in first (the other is refused). `None` when the subject is
/// not a `user://` address with a non-empty, well-escaped `sub`.
pub fn localpart_for_subject(subject: &str) -> Option<String> {
    let (_idp, sub) = subject.strip_prefix("user://")?.split_once('/')?;
    let sub = percent_decode(sub)?;
    let mut out = String::with_capacity(sub.len());
    for b in sub {
        match b {
            b'A'..=b'Z' => {
                out.push('_');
                out.push(char::from(b.to_ascii_lowercase()));
            }
            b'_' => out.push_str("__"),
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'/' => out.push(char::from(b)),
            other => {
                // Writing to a String cannot fail.
                let _ = write!(out, "={other:02x}");
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Decodes `%XX` escapes; `None` for a malformed one.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(pair, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_to_escaped_localparts() {
        let cases = [
            ("user://idp.example.org/alice", "alice"),
            ("user://idp.example.org/Alice_B", "_alice___b"),
            ("user://idp.example.org/a%20b%2Fc%25", "a=20b/c=25"),
            ("user://idp.example.org/auth0|123", "auth0=7c123"),
            (
                "user://idp.example.org/bob@example.org",
                "bob=40example.org",
            ),
            // `=` is escaped, so these two stay apart.
            ("user://idp.example.org/=40", "=3d40"),
            ("user://idp.example.org/@", "=40"),
        ];
        for (subject, want) in cases {
            assert_eq!(
                localpart_for_subject(subject).as_deref(),
                Some(want),
                "{subject}"
            );
        }
        assert_eq!(localpart_for_subject("hyperty://x/y"), None);
        assert_eq!(localpart_for_subject("user://idp/"), None);
        assert_eq!(localpart_for_subject("user://idp/%zz"), None);
        assert_eq!(localpart_for_subject("user://idp/%4"), None);
    }
}
