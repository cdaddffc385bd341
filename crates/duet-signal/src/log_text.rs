//! Client text as it may appear in the log: a short, escaped prefix, so that a
//! huge message cannot flood the log and a newline in it cannot forge a line.

/// Characters of client text a log line shows.
pub(crate) const LOG_EXCERPT_CHARS: usize = 64;

/// `text` cut to [`LOG_EXCERPT_CHARS`] characters and escaped (no control
/// characters, quotes or backslashes left raw), with the full length when cut.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(LOG_EXCERPT_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(LOG_EXCERPT_CHARS).is_some() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_only_escaped() {
        assert_eq!(excerpt("plain"), "plain");
        assert_eq!(
            excerpt("a\nINFO forged\r\u{1b}[31m\"x\""),
            "a\\nINFO forged\\r\\u{1b}[31m\\\"x\\\""
        );
    }

    #[test]
    fn long_text_is_cut_and_its_length_given() {
        let long = "é".repeat(30_000);
        let cut = excerpt(&long);
        assert!(cut.starts_with(&"é".repeat(LOG_EXCERPT_CHARS)));
        assert!(cut.ends_with("… (60000 bytes)"), "{cut}");
        assert!(!excerpt(&"\n".repeat(1000)).contains('\n'));
    }
}
