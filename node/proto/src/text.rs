//! Header strings kept as spans into the envelope's original JSON text when they have no escapes,
//! so that parsing a message allocates only the shared copy of its text.

use std::borrow::Cow;

/// A string field of an envelope: a byte range into the raw text, or an owned copy when the JSON
/// string had escapes (and so differs from its raw bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Text {
    Span(u32, u32),
    Owned(Box<str>),
}

impl Text {
    /// Keeps `value` as a span of `raw` when it borrows from it, otherwise owns it.
    pub(crate) fn new(raw: &str, value: Cow<'_, str>) -> Self {
        match value {
            Cow::Borrowed(s) => span_of(raw, s)
                .map(|(a, b)| Text::Span(a, b))
                .unwrap_or_else(|| Text::Owned(s.into())),
            Cow::Owned(s) => Text::Owned(s.into_boxed_str()),
        }
    }

    pub(crate) fn get<'a>(&'a self, raw: &'a str) -> &'a str {
        match self {
            Text::Span(a, b) => &raw[*a as usize..*b as usize],
            Text::Owned(s) => s,
        }
    }
}

/// The byte range of `sub` inside `raw`, if `sub` is a slice of `raw`.
pub(crate) fn span_of(raw: &str, sub: &str) -> Option<(u32, u32)> {
    let base = raw.as_ptr() as usize;
    let start = (sub.as_ptr() as usize).checked_sub(base)?;
    let end = start + sub.len();
    if end <= raw.len() && raw.is_char_boundary(start) && raw.is_char_boundary(end) {
        Some((u32::try_from(start).ok()?, u32::try_from(end).ok()?))
    } else {
        None
    }
}
