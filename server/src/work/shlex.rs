//! Shell-style splitting of command parameters, with the exact rules of Go's
//! `github.com/google/shlex` (what Go receptor uses), so a `params` string splits the same
//! way on either implementation:
//!
//! - words are separated by space, tab, CR and LF;
//! - `'...'` quotes literally; `"..."` quotes, and inside it a backslash escapes *any*
//!   character (unlike POSIX, which keeps the backslash before ordinary characters);
//! - outside quotes a backslash escapes the next character;
//! - `#` at the start of a word begins a comment that runs to the end of the line;
//! - quotes join with adjacent text (`a"b c"d` is one word) and `""` is an empty word.

/// Why a string could not be split. The texts are google/shlex's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SplitError {
    /// A quote was not closed.
    #[error("EOF found when expecting closing quote")]
    UnclosedQuote,
    /// The text ended with a lone backslash.
    #[error("EOF found after escape character")]
    TrailingEscape,
}

/// Splits `text` into words.
///
/// # Errors
/// See [`SplitError`].
pub(crate) fn split(text: &str) -> Result<Vec<String>, SplitError> {
    #[derive(Clone, Copy)]
    enum Mode {
        Start,
        Word,
        Escaping,
        Single,
        Double,
        DoubleEscaping,
        Comment,
    }
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let mut words = Vec::new();
    let mut word = String::new();
    let mut mode = Mode::Start;
    for c in text.chars() {
        mode = match mode {
            Mode::Start => match c {
                c if is_space(c) => Mode::Start,
                '\'' => Mode::Single,
                '"' => Mode::Double,
                '\\' => Mode::Escaping,
                '#' => Mode::Comment,
                c => {
                    word.push(c);
                    Mode::Word
                }
            },
            Mode::Word => match c {
                c if is_space(c) => {
                    words.push(std::mem::take(&mut word));
                    Mode::Start
                }
                '\'' => Mode::Single,
                '"' => Mode::Double,
                '\\' => Mode::Escaping,
                c => {
                    word.push(c);
                    Mode::Word
                }
            },
            Mode::Escaping => {
                word.push(c);
                Mode::Word
            }
            Mode::Single => match c {
                '\'' => Mode::Word,
                c => {
                    word.push(c);
                    Mode::Single
                }
            },
            Mode::Double => match c {
                '"' => Mode::Word,
                '\\' => Mode::DoubleEscaping,
                c => {
                    word.push(c);
                    Mode::Double
                }
            },
            Mode::DoubleEscaping => {
                word.push(c);
                Mode::Double
            }
            Mode::Comment => match c {
                '\n' => Mode::Start,
                _ => Mode::Comment,
            },
        };
    }
    match mode {
        Mode::Start | Mode::Comment => {}
        Mode::Word => words.push(word),
        Mode::Escaping | Mode::DoubleEscaping => return Err(SplitError::TrailingEscape),
        Mode::Single | Mode::Double => return Err(SplitError::UnclosedQuote),
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_google_shlex() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            ("one two  three", &["one", "two", "three"]),
            ("\tone\r\ntwo\n", &["one", "two"]),
            (
                r#"-c "read PAYLOAD; echo ${PAYLOAD^^}""#,
                &["-c", "read PAYLOAD; echo ${PAYLOAD^^}"],
            ),
            (r#"-c 'echo "hi"; exit 3'"#, &["-c", r#"echo "hi"; exit 3"#]),
            (r#"a"b c"d"#, &["ab cd"]),
            (r#"a "" b"#, &["a", "", "b"]),
            (r"a\ b", &["a b"]),
            (r#""a\b\"c""#, &["ab\"c"]),
            (r"'a\b'", &[r"a\b"]),
            ("a #comment here\nb", &["a", "b"]),
            ("a#b", &["a#b"]),
            (
                "--private-data-dir=/tmp/x --delete",
                &["--private-data-dir=/tmp/x", "--delete"],
            ),
            ("émoji 👾", &["émoji", "👾"]),
        ];
        for (input, want) in cases {
            let got = split(input).expect("splits");
            assert_eq!(got, want.to_vec(), "{input:?}");
        }
    }

    #[test]
    fn errors_use_google_shlex_texts() {
        assert_eq!(split("'open"), Err(SplitError::UnclosedQuote));
        assert_eq!(split("\"open"), Err(SplitError::UnclosedQuote));
        assert_eq!(split("end\\"), Err(SplitError::TrailingEscape));
        assert_eq!(split("\"a\\"), Err(SplitError::TrailingEscape));
        assert_eq!(
            SplitError::UnclosedQuote.to_string(),
            "EOF found when expecting closing quote"
        );
        assert_eq!(
            SplitError::TrailingEscape.to_string(),
            "EOF found after escape character"
        );
    }
}
