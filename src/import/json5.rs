//! Reading OpenClaw's config: JSON5 (comments, trailing commas, unquoted keys, single quotes)
//! into a JSON value, bounded in size and depth, with the line and column of what is wrong. The
//! parser is dprint's `jsonc-parser` with its JSON5 options on (all but missing commas): every
//! JSON5 form but `Infinity`/`NaN`, which a JSON value cannot hold and no OpenClaw setting uses.
//! Pure.

use serde_json::Value;

/// OpenClaw configs are a few KiB; this bounds the memory and time of a parse.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
/// Nesting deeper than this is refused before parsing (the parser's serde path recurses once per
/// level, and the stack is finite); OpenClaw's own configs nest about six deep.
pub const MAX_DEPTH: usize = 64;

/// Why the input could not be converted: where (1-based line and column) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub line_col: Option<(usize, usize)>,
    pub message: String,
}

impl ImportError {
    pub(super) fn at(text: &str, offset: usize, message: impl Into<String>) -> ImportError {
        ImportError {
            line_col: Some(crate::config::line_col(text, offset)),
            message: message.into(),
        }
    }
}

/// JSON5 text → a value, with the depth and size limits.
pub fn parse(text: &str) -> Result<Value, ImportError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ImportError {
            line_col: None,
            message: format!(
                "the file is {} bytes; an OpenClaw config is at most {MAX_INPUT_BYTES}",
                text.len()
            ),
        });
    }
    check_depth(text)?;
    let opts = jsonc_parser::ParseOptions {
        allow_missing_commas: false,
        ..Default::default()
    };
    jsonc_parser::parse_to_serde_value::<Value>(text, &opts).map_err(|e| ImportError {
        line_col: Some((e.line_display(), e.column_display())),
        message: format!(
            "{}: this is not valid JSON5 (the format of openclaw.json)",
            e.kind()
        ),
    })
}

/// Refuses nesting deeper than [`MAX_DEPTH`] before the (recursive) parser sees it. Brackets in
/// strings and comments do not count; the lexing is JSON5's, and where this one and the parser's
/// could differ the parser stops with an error first.
fn check_depth(text: &str) -> Result<(), ImportError> {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ImportError::at(
                        text,
                        i,
                        format!("nested more than {MAX_DEPTH} deep: this is no OpenClaw config"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// json5.org's own example: every JSON5 form (Infinity and NaN apart: a JSON value cannot
    /// hold them).
    #[test]
    fn every_json5_feature_parses() {
        let text = "{\n  // comments\n  unquoted: 'and you can quote me on that',\n  \
                    singleQuotes: 'I can use \"double quotes\" here',\n  \
                    lineBreaks: \"Look, Mom! \\\nNo \\\\n's!\",\n  hexadecimal: 0xdecaf,\n  \
                    leadingDecimalPoint: .8675309, andTrailing: 8675309.,\n  positiveSign: +1,\n  \
                    trailingComma: 'in objects', andIn: ['arrays',],\n  \
                    \"backwardsCompatible\": \"with JSON\",\n  $dollar_ok: 1,\n}\n";
        let v = parse(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        assert_eq!(v["unquoted"], "and you can quote me on that");
        assert_eq!(v["singleQuotes"], "I can use \"double quotes\" here");
        assert_eq!(v["lineBreaks"], "Look, Mom! No \\n's!");
        assert_eq!(v["hexadecimal"], 0xdecaf);
        assert_eq!(v["positiveSign"], 1);
        assert_eq!(v["andIn"][0], "arrays");
        assert_eq!(v["backwardsCompatible"], "with JSON");
        assert!(v.get("$dollar_ok").is_some());
    }

    #[test]
    fn malformed_input_says_where() {
        let e = parse(
            "{\n  channels: {\n    whatsapp: { dmPolicy: 'allowlist' allowFrom: [] },\n  },\n}\n",
        )
        .unwrap_err();
        assert_eq!(e.line_col, Some((3, 38)), "{e:?}");
        assert!(e.message.contains("Expected comma"), "{e:?}");
        // Cut off: the error is at the end, and says what was left open.
        let e = parse("{ channels: {").unwrap_err();
        assert_eq!(e.line_col, Some((1, 14)), "{e:?}");
        assert!(e.message.contains("Unterminated object"), "{e:?}");
        let e = parse("{ a: 'b\n").unwrap_err();
        assert!(e.line_col.is_some(), "{e:?}");
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_recurses() {
        let deep = format!("{{a:{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nested more than"), "{e:?}");
        // `{` is the first level: the 64th `[` (column 3 + 64) is one too many.
        assert_eq!(e.line_col, Some((1, 3 + MAX_DEPTH)));
        // Brackets in strings and comments are not nesting.
        let fine = format!(
            "{{ // {}\n a: '{}', /* {} */ }}",
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(parse(&fine).is_ok());
        let too_big = " ".repeat(MAX_INPUT_BYTES + 1);
        assert!(parse(&too_big).unwrap_err().message.contains("bytes"));
    }
}
