//! Turning Cedar's source spans (byte offsets in a file's text) into `line:col`, and Cedar
//! diagnostics into one-line messages.

use miette::Diagnostic;

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) line: usize,
    pub(crate) col: usize,
}

/// The position of byte `offset` in `text` (clamped to the text).
pub(crate) fn position(text: &str, offset: usize) -> Position {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        col: before[line_start..].chars().count() + 1,
    }
}

/// The byte offset where a diagnostic points: its primary label, else its first label.
pub(crate) fn offset(diagnostic: &dyn Diagnostic) -> Option<usize> {
    let labels: Vec<_> = diagnostic.labels()?.collect();
    labels
        .iter()
        .find(|l| l.primary())
        .or_else(|| labels.first())
        .map(|l| l.offset())
}

/// The diagnostic as one line: its message, then its help if it has one.
pub(crate) fn describe(diagnostic: &dyn Diagnostic) -> String {
    let message = diagnostic.to_string();
    match diagnostic.help() {
        Some(help) => format!("{message} ({help})"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(position(text, 0), Position { line: 1, col: 1 });
        assert_eq!(position(text, 3), Position { line: 2, col: 1 });
        // 'é' is two bytes: offset 7 is after it.
        assert_eq!(position(text, 7), Position { line: 2, col: 4 });
        assert_eq!(position(text, 9), Position { line: 3, col: 2 });
        assert_eq!(position(text, 99), Position { line: 3, col: 2 });
        // Inside a multi-byte character: clamped back to its start.
        assert_eq!(position(text, 6), Position { line: 2, col: 3 });
    }
}
