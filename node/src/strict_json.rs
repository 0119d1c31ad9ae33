//! [`check`]: whether a JSON text is JSON whose every string is Unicode. serde_json lets a lone
//! surrogate escape (`"\ud800"`) through when it skips a value or keeps it raw (`RawValue`,
//! `IgnoredAny`), as the node does with event content and bus bodies; such a text, once stored
//! and served, makes a strict reader refuse the whole answer. The Matrix edge and the bus-to-room
//! bridge refuse it with this check: every string and key decoded once, nothing allocated for
//! strings without escapes.

/// Parses `json` with every string and key decoded: an error for text that is not JSON, for a
/// string that is not Unicode, or for nesting beyond serde_json's limit.
pub(crate) fn check(json: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Strict>(json).map(|Strict| ())
}

/// Any JSON value, read with every string and key decoded (so that serde_json refuses a lone
/// surrogate escape, which it lets through when it skips a value or keeps it raw).
struct Strict;

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_anywhere_are_refused_and_pairs_accepted() {
        for bad in [
            &br#"{"body":"\ud800"}"#[..],
            br#"{"a":["x",{"b":"\udc00"}]}"#,
            br#"{"\ud800":1}"#,
            br#""\ud800\u0041""#,
        ] {
            assert!(check(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        for good in [
            &br#"{"a":"\ud83d\ude00","b":[1,2.5,-3,true,null],"\u00e9":"\u0000"}"#[..],
            b"{}",
            b"[]",
            b"1",
        ] {
            assert!(check(good).is_ok(), "{}", String::from_utf8_lossy(good));
        }
    }
}
