//! A line of text as the API takes it (a reason, a carrier, an address line): 1 to `max`
//! characters, no control characters, and no whitespace at either end. Padding is refused
//! rather than trimmed, so what is stored is what was sent and the API document can state
//! the rule exactly ([`line_pattern`]).

/// The control characters (`char::is_control`, Unicode `Cc`), as code point ranges.
const CONTROL: &[(char, char)] = &[('\u{0}', '\u{1f}'), ('\u{7f}', '\u{9f}')];

/// The characters refused at either end: the controls and the whitespace
/// (`char::is_whitespace`, Unicode `White_Space`).
const EDGE: &[(char, char)] = &[
    ('\u{0}', '\u{20}'),
    ('\u{7f}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// A regex class of everything but `ranges` (`\uXXXX` escapes, which ECMA-262, Python and
/// the regex crate all read).
fn not_in(ranges: &[(char, char)]) -> String {
    let mut out = String::from("[^");
    for &(lo, hi) in ranges {
        out.push_str(&format!("\\u{:04x}", u32::from(lo)));
        if hi != lo {
            out.push_str(&format!("-\\u{:04x}", u32::from(hi)));
        }
    }
    out.push(']');
    out
}

/// What [`parse_line`] accepts besides its length, as a JSON Schema pattern.
pub fn line_pattern() -> String {
    let (edge, inner) = (not_in(EDGE), not_in(CONTROL));
    format!("^{edge}(?:{inner}*{edge})?$")
}

/// A line of 1 to `max` characters with no control characters and no whitespace at
/// either end; the message says which rule it breaks.
pub fn parse_line(raw: &str, max: usize) -> Result<String, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
        return Err("must not start or end with whitespace".into());
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(ranges: &[(char, char)], c: char) -> bool {
        ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
    }

    #[test]
    fn the_ranges_are_exactly_the_characters_the_code_refuses() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(listed(CONTROL, c), c.is_control(), "{c:?}");
            assert_eq!(
                listed(EDGE, c),
                c.is_control() || c.is_whitespace(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn the_pattern_says_what_the_parser_accepts() {
        let pattern = regex::Regex::new(&line_pattern()).unwrap();
        for line in [
            "DHL",
            "a",
            "two units damaged",
            "Straße 1, 2. OG",
            " padded",
            "padded ",
            "\u{a0}nbsp",
            "tab\tinside",
            "new\nline",
            "nul\0",
            "ok\u{3000}",
            "",
        ] {
            assert_eq!(
                pattern.is_match(line),
                parse_line(line, 100).is_ok(),
                "{line:?}"
            );
        }
        assert_eq!(
            parse_line(&"x".repeat(101), 100).unwrap_err(),
            "must be at most 100 characters"
        );
    }
}
