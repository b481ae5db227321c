//! Splitting long replies at a channel's size limit.
//!
//! Owns only the choice of cut points: pure text in, pieces out. It never sends, never sleeps and
//! never knows which channel the pieces go to (the caller passes the limit; [`crate::delivery`]
//! paces the pieces).
//!
//! Each piece is filled as far as the limit allows (greedy), cut at the best boundary inside it:
//! a blank line (paragraph), then a line break, then a sentence end (`.`, `!` or `?` followed by
//! whitespace), then any whitespace (word). A boundary of a preferred kind is only taken when it
//! leaves the piece at least [`MIN_FILL_DIVISOR`]-th full, so that one early paragraph break does
//! not leave a tiny piece followed by many more; otherwise the latest boundary of any kind is used.
//! A word longer than the limit is cut hard, on a character boundary.

/// A preferred boundary is used only if the piece before it holds at least `limit / MIN_FILL_DIVISOR`
/// characters: halves keep the piece count close to the minimum (`⌈len / limit⌉`, at worst about
/// double) while still cutting at paragraphs in ordinary prose.
const MIN_FILL_DIVISOR: usize = 2;

/// Splits `text` into pieces of at most `max_chars` characters (Unicode scalar values), preferring
/// paragraph, then line, then sentence, then word boundaries; a single word longer than the limit
/// is split hard. Pieces are trimmed of surrounding whitespace; no piece is empty; joining them
/// with whitespace gives the text back in order (only whitespace at the cuts is lost). An empty or
/// all-whitespace text gives no pieces. A limit of 0 is treated as 1.
pub fn split(text: &str, max_chars: usize) -> Vec<String> {
    let max = max_chars.max(1);
    let mut pieces = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        match cut_point(rest, max) {
            None => {
                pieces.push(rest.trim_end().to_string());
                break;
            }
            Some(at) => {
                let piece = rest[..at].trim_end();
                // `rest` starts with a non-whitespace char and `at > 0`, so `piece` is not empty.
                pieces.push(piece.to_string());
                rest = rest[at..].trim_start();
            }
        }
    }
    pieces
}

/// The latest boundary of each kind within the window, as a byte offset and the number of chars
/// before it.
#[derive(Default, Clone, Copy)]
struct Boundaries {
    paragraph: Option<(usize, usize)>,
    line: Option<(usize, usize)>,
    sentence: Option<(usize, usize)>,
    word: Option<(usize, usize)>,
}

/// Where to cut `rest` (which starts with a non-whitespace char), as a byte offset `> 0`, or `None`
/// when all of `rest` fits in `max` chars.
fn cut_point(rest: &str, max: usize) -> Option<usize> {
    let mut found = Boundaries::default();
    let mut prev: Option<char> = None;
    // Whether every char since the last '\n' was whitespace (and there was such a '\n').
    let mut blank_line = false;
    let mut hard = None;
    for (count, (at, ch)) in rest.char_indices().enumerate() {
        // `count` chars lie before `at`; a cut here gives a piece of `count` chars.
        if count > max {
            break;
        }
        if count == max {
            hard = Some(at);
        }
        if ch == '\n' {
            if blank_line {
                found.paragraph = Some((at, count));
            }
            found.line = Some((at, count));
            blank_line = true;
        } else if !ch.is_whitespace() {
            blank_line = false;
        }
        if ch.is_whitespace() {
            if matches!(prev, Some('.' | '!' | '?')) {
                found.sentence = Some((at, count));
            }
            found.word = Some((at, count));
        }
        prev = Some(ch);
    }
    // The loop ended before passing `max` chars: everything fits.
    let hard = hard?;
    let min_fill = max / MIN_FILL_DIVISOR;
    let preferred = [found.paragraph, found.line, found.sentence, found.word];
    preferred
        .iter()
        .flatten()
        .find(|(_, count)| *count >= min_fill && *count > 0)
        .or_else(|| {
            preferred
                .iter()
                .flatten()
                .filter(|(_, count)| *count > 0)
                .max_by_key(|(_, count)| *count)
        })
        .map(|(at, _)| *at)
        .or(Some(hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn non_ws(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    fn check_invariants(text: &str, max: usize, pieces: &[String]) {
        for p in pieces {
            assert!(!p.is_empty(), "empty piece for {text:?}");
            assert!(p.chars().count() <= max, "piece over {max}: {p:?}");
            assert_eq!(p.trim(), p, "untrimmed piece {p:?}");
        }
        assert_eq!(
            non_ws(&pieces.concat()),
            non_ws(text),
            "content changed for {text:?}"
        );
    }

    #[test]
    fn short_text_is_one_trimmed_piece_and_blank_text_none() {
        assert_eq!(split("  hello there \n", 100), vec!["hello there"]);
        assert!(split("", 10).is_empty());
        assert!(split(" \n\n\t ", 10).is_empty());
        assert_eq!(split("exactly10!", 10), vec!["exactly10!"]);
    }

    #[test]
    fn prefers_paragraph_then_line_then_sentence_then_word() {
        // A paragraph break wins over a later line break.
        let text = "first paragraph here.\n\nsecond one\nthird line goes on";
        assert_eq!(
            split(text, 40),
            vec!["first paragraph here.", "second one\nthird line goes on"]
        );
        // No paragraph break: the line break wins over later sentence and word breaks.
        let text = "line one is here\nline two. More words after";
        assert_eq!(
            split(text, 30),
            vec!["line one is here", "line two. More words after"]
        );
        // No line break: the sentence end wins over later word breaks.
        let text = "One sentence ends here. Then some more words follow";
        assert_eq!(
            split(text, 35),
            vec!["One sentence ends here.", "Then some more words follow"]
        );
        // Only words: the latest space inside the limit.
        assert_eq!(
            split("alpha beta gamma delta", 12),
            vec!["alpha beta", "gamma delta"]
        );
        // `?` and `!` end sentences too.
        assert_eq!(
            split("Really? Yes! And then more text", 16),
            vec!["Really? Yes!", "And then more", "text"]
        );
    }

    #[test]
    fn an_early_boundary_does_not_leave_a_tiny_piece() {
        // The paragraph break sits at 2 chars of a 20 limit: a word break fills the piece instead.
        let text = "Hi\n\nthis is a much longer paragraph of words";
        let pieces = split(text, 20);
        assert_eq!(pieces[0], "Hi\n\nthis is a much");
        check_invariants(text, 20, &pieces);
    }

    #[test]
    fn a_word_longer_than_the_limit_is_cut_hard_on_char_boundaries() {
        assert_eq!(split("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        // Multi-byte chars: counted as chars, cut between them.
        let text = "ééééé🙂🙂🙂 ok";
        let pieces = split(text, 3);
        assert_eq!(pieces, vec!["ééé", "éé🙂", "🙂🙂", "ok"]);
        // A limit of 0 behaves as 1 rather than looping.
        assert_eq!(split("ab", 0), vec!["a", "b"]);
    }

    #[test]
    fn ten_thousand_chars_at_4096_give_three_full_pieces() {
        let mut text = String::new();
        let mut i = 0;
        while text.chars().count() < 10_000 {
            text.push_str(&format!("Sentence number {i} says something. "));
            if i % 7 == 6 {
                text.push_str("\n\n");
            }
            i += 1;
        }
        let text: String = text.chars().take(10_000).collect();
        let pieces = split(&text, 4096);
        assert_eq!(pieces.len(), 3);
        check_invariants(&text, 4096, &pieces);
        // Greedy: the first two pieces are well over half full.
        assert!(pieces[0].chars().count() > 3500);
        assert!(pieces[1].chars().count() > 3500);
    }

    #[test]
    fn generated_texts_keep_every_invariant() {
        const ALPHABET: &[&str] = &[
            "a",
            "b",
            "x",
            "é",
            "🙂",
            " ",
            " ",
            "\n",
            "\n\n",
            ". ",
            "! ",
            "? ",
            "\t",
            "\r\n",
            "longwordlongwordlongword",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed_c4a1);
        for _ in 0..2000 {
            let parts = rng.usize(0..120);
            let text: String = (0..parts)
                .map(|_| ALPHABET[rng.usize(0..ALPHABET.len())])
                .collect();
            let max = rng.usize(1..40);
            let pieces = split(&text, max);
            check_invariants(&text, max, &pieces);
            if text.trim().is_empty() {
                assert!(pieces.is_empty());
            }
        }
    }
}
