//! Splitting long replies at a channel's limit. Placeholder until implemented.

/// Splits `text` into pieces of at most `max_chars` characters (Unicode scalar values), preferring
/// paragraph, then line, then sentence, then word boundaries; a single word longer than the limit
/// is split hard. Pieces are trimmed of surrounding whitespace; no piece is empty; joining them
/// with whitespace gives the text back in order.
pub fn split(text: &str, max_chars: usize) -> Vec<String> {
    let _ = max_chars;
    vec![text.to_string()]
}
