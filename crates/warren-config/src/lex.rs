//! The spanned parse: OpenVPN's line lexer and inline `<tag>` blocks.
//!
//! This follows OpenVPN 2.6.14 `options.c` closely:
//! * `parse_line` (options.c:4975): a state machine over one line with
//!   unquoted, `"double"` and `'single'` quoted parameters. A backslash escapes
//!   the next character everywhere except inside single quotes, and may only
//!   escape `\`, `"` or whitespace ("Bad backslash usage" otherwise). `#` and
//!   `;` start a comment only where a new parameter would start, so `a#b` is one
//!   parameter and `a #b` is `a` followed by a comment.
//! * `read_config_file` (options.c:5291): an UTF-8 BOM at the start of the file
//!   is skipped, and `bypass_doubledash` strips a leading `--` from the
//!   directive name when the name is at least three characters long.
//! * `check_inline_file` / `read_inline_file` (options.c:5191-5258): a line
//!   whose only parameter is `<tag>` opens an inline block that runs up to the
//!   first line which, after leading whitespace, starts with `</tag>`. The
//!   lines in between are kept verbatim, each ending in `\n`.
//!
//! Differences, all on the side of refusing odd input: a NUL byte is an error
//! (OpenVPN silently truncates the line there); a backslash at the very end of
//! a line is an error (OpenVPN escapes the newline into the parameter); lines
//! are not split at 256 bytes and parameters have no 256-byte limit. CRLF line
//! endings are accepted and the `\r` is removed, also inside inline blocks.

use std::fmt;
use std::sync::Arc;

use crate::error::{ConfigError, Location, SyntaxError};

/// Where a token starts: 1-based line and 1-based column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column of the token's first character (the opening quote for a
    /// quoted parameter).
    pub column: u32,
}

/// A value together with the place in the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    /// The value, with quotes and escapes already removed.
    pub value: T,
    /// Where the token starts.
    pub span: Span,
}

impl<T: fmt::Display> fmt::Display for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// One directive (one logical line, or one inline block) of an OpenVPN config.
#[derive(Clone, PartialEq, Eq)]
pub struct Directive {
    /// The directive name, with any leading `--` removed. For an inline block
    /// this is the tag (`ca` for `<ca>`).
    pub name: Spanned<String>,
    /// The parameters after the name. Always empty for an inline block.
    pub args: Vec<Spanned<String>>,
    /// The body of an inline block, each line ending in `\n`.
    pub inline: Option<String>,
    /// The line of the directive name (the `<tag>` line for a block); 0 for a
    /// directive that stands for something else (a command-line option of the
    /// zero-config server), whose `file` then names that option.
    pub line: u32,
    /// The config file's path, or the origin given to [`parse_str`].
    pub file: Arc<str>,
}

impl Directive {
    /// `file:line` of this directive (only `file` for line 0).
    pub fn location(&self) -> Location {
        Location {
            file: Arc::clone(&self.file),
            line: (self.line != 0).then_some(self.line),
        }
    }
}

impl fmt::Debug for Directive {
    // Inline blocks hold private keys: show only their size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directive")
            .field("name", &self.name)
            .field("args", &self.args)
            .field(
                "inline",
                &self.inline.as_ref().map(|s| format!("<{} bytes>", s.len())),
            )
            .field("line", &self.line)
            .field("file", &self.file)
            .finish()
    }
}

/// Parses OpenVPN config text into directives, without interpreting them.
///
/// `origin` names the text in errors (usually the file path). Blank lines and
/// comments produce nothing. Errors carry `origin:line`.
pub fn parse_str(text: &str, origin: &str) -> Result<Vec<Directive>, ConfigError> {
    let file: Arc<str> = Arc::from(origin);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = LineIter::new(text);
    let mut out = Vec::new();

    while let Some((line_no, raw)) = lines.next() {
        let loc = |line| Location {
            file: Arc::clone(&file),
            line: Some(line),
        };
        let mut tokens = lex_line(raw, line_no).map_err(|kind| ConfigError::Syntax {
            location: loc(line_no),
            kind,
        })?;
        if tokens.is_empty() {
            continue;
        }
        let mut rest = tokens.split_off(1);
        let Some(mut name) = tokens.pop() else {
            continue;
        };
        // OpenVPN options.c bypass_doubledash: "--x" -> "x" when len >= 3.
        if name.value.len() >= 3 && name.value.starts_with("--") {
            name.value.drain(..2);
            name.span.column += 2;
        }

        // OpenVPN options.c check_inline_file: a lone "<tag>" opens a block.
        if rest.is_empty() && name.value.len() > 2 {
            if name.value.starts_with("</") && name.value.ends_with('>') {
                return Err(ConfigError::Syntax {
                    location: loc(line_no),
                    kind: SyntaxError::StrayCloseTag {
                        tag: name.value.clone(),
                    },
                });
            }
            if name.value.starts_with('<') && name.value.ends_with('>') {
                let tag = name.value[1..name.value.len() - 1].to_owned();
                let close = format!("</{tag}>");
                let mut body = String::new();
                let mut closed = false;
                for (_, l) in lines.by_ref() {
                    if l.trim_start_matches(is_c_space).starts_with(&close) {
                        closed = true;
                        break;
                    }
                    if l.contains('\0') {
                        return Err(ConfigError::Syntax {
                            location: loc(line_no),
                            kind: SyntaxError::NulByte,
                        });
                    }
                    body.push_str(l);
                    body.push('\n');
                }
                if !closed {
                    return Err(ConfigError::Syntax {
                        location: loc(line_no),
                        kind: SyntaxError::UnterminatedInline { tag },
                    });
                }
                name.value = tag;
                name.span.column += 1;
                out.push(Directive {
                    name,
                    args: Vec::new(),
                    inline: Some(body),
                    line: line_no,
                    file: Arc::clone(&file),
                });
                continue;
            }
        }

        out.push(Directive {
            name,
            args: std::mem::take(&mut rest),
            inline: None,
            line: line_no,
            file: Arc::clone(&file),
        });
    }
    Ok(out)
}

/// Lines without their `\n` / `\r\n` terminator, numbered from 1.
struct LineIter<'a> {
    rest: Option<&'a str>,
    line: u32,
}

impl<'a> LineIter<'a> {
    fn new(text: &'a str) -> Self {
        LineIter {
            rest: if text.is_empty() { None } else { Some(text) },
            line: 0,
        }
    }
}

impl<'a> Iterator for LineIter<'a> {
    type Item = (u32, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let text = self.rest?;
        let (line, rest) = match text.find('\n') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        self.rest = if rest.is_empty() { None } else { Some(rest) };
        self.line = self.line.saturating_add(1);
        Some((self.line, line.strip_suffix('\r').unwrap_or(line)))
    }
}

/// C `isspace` in the "C" locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Initial,
    Unquoted,
    Double,
    Single,
}

/// Splits one line into parameters; OpenVPN options.c `parse_line`.
///
/// `None` as the current character stands for the terminating NUL, which
/// `parse_line` treats as whitespace (`space()` in options.c).
fn lex_line(line: &str, line_no: u32) -> Result<Vec<Spanned<String>>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut state = State::Initial;
    let mut backslash = false;
    let mut param = String::new();
    let mut start = Span {
        line: line_no,
        column: 0,
    };

    let chars = line.chars().map(Some).chain(std::iter::once(None));
    for (idx, ch) in chars.enumerate() {
        if ch == Some('\0') {
            return Err(SyntaxError::NulByte);
        }
        let column = u32::try_from(idx).unwrap_or(u32::MAX).saturating_add(1);
        let space = ch.is_none_or(is_c_space);

        if !backslash && ch == Some('\\') && state != State::Single {
            backslash = true;
            if state == State::Initial {
                // An escaped character starts an unquoted parameter here.
                start.column = column;
            }
            continue;
        }

        let mut out: Option<char> = None;
        let mut done = false;
        match state {
            State::Initial => {
                if !space {
                    if ch == Some('#') || ch == Some(';') {
                        break; // comment
                    }
                    if !backslash {
                        start.column = column;
                    }
                    if !backslash && ch == Some('"') {
                        state = State::Double;
                    } else if !backslash && ch == Some('\'') {
                        state = State::Single;
                    } else {
                        out = ch;
                        state = State::Unquoted;
                    }
                }
            }
            State::Unquoted => {
                if !backslash && space {
                    done = true;
                } else {
                    out = ch;
                }
            }
            State::Double => {
                if !backslash && ch == Some('"') {
                    done = true;
                } else {
                    out = ch;
                }
            }
            State::Single => {
                if ch == Some('\'') {
                    done = true;
                } else {
                    out = ch;
                }
            }
        }

        if done {
            tokens.push(Spanned {
                value: std::mem::take(&mut param),
                span: start,
            });
            state = State::Initial;
        }
        if backslash
            && let Some(c) = out
            && !(c == '\\' || c == '"' || is_c_space(c))
        {
            return Err(SyntaxError::BadBackslash { column });
        }
        backslash = false;
        if let Some(c) = out {
            param.push(c);
        }
    }

    match state {
        State::Initial => Ok(tokens),
        State::Double => Err(SyntaxError::UnclosedQuote),
        State::Single => Err(SyntaxError::UnclosedSingleQuote),
        // Only reachable through a backslash before the end of the line.
        State::Unquoted => Err(SyntaxError::TrailingBackslash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        lex_line(line, 1)
            .expect("lexes")
            .into_iter()
            .map(|t| t.value)
            .collect()
    }

    fn lex_err(line: &str) -> SyntaxError {
        lex_line(line, 1).expect_err("must fail")
    }

    #[test]
    fn whitespace_and_comments() {
        assert_eq!(words("  port   1194\t"), ["port", "1194"]);
        assert_eq!(words("# comment"), Vec::<String>::new());
        assert_eq!(words("   ; comment"), Vec::<String>::new());
        assert_eq!(words("verb 4 # trailing"), ["verb", "4"]);
        assert_eq!(
            words("verb 4; not a comment"),
            ["verb", "4;", "not", "a", "comment"]
        );
        assert_eq!(words("a#b c;d"), ["a#b", "c;d"]);
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("\x0b\x0c"), Vec::<String>::new());
    }

    #[test]
    fn quotes() {
        assert_eq!(
            words(r#"push "route 10.0.0.0 255.0.0.0""#),
            ["push", "route 10.0.0.0 255.0.0.0"]
        );
        assert_eq!(
            words(r#"push 'dhcp-option DNS 1.1.1.1'"#),
            ["push", "dhcp-option DNS 1.1.1.1"]
        );
        assert_eq!(words(r#"a "" b"#), ["a", "", "b"]);
        // A closing quote ends the parameter at once.
        assert_eq!(words(r#""ab"cd"#), ["ab", "cd"]);
        // Quotes inside an unquoted parameter are literal.
        assert_eq!(words(r#"ab"cd" x"#), [r#"ab"cd""#, "x"]);
        assert_eq!(words(r#"'#not comment'"#), ["#not comment"]);
        assert_eq!(words(r#""a ; b # c""#), ["a ; b # c"]);
    }

    #[test]
    fn escapes() {
        assert_eq!(words(r"a\ b"), ["a b"]);
        assert_eq!(words(r#"a\"b"#), [r#"a"b"#]);
        assert_eq!(words(r"c:\\dir\\file"), [r"c:\dir\file"]);
        assert_eq!(words(r#""say \"hi\"""#), [r#"say "hi""#]);
        assert_eq!(words(r#"\"quoted"#), [r#""quoted"#]);
        // No escapes inside single quotes.
        assert_eq!(words(r"'a\b'"), [r"a\b"]);
        assert_eq!(lex_err(r"c:\dir"), SyntaxError::BadBackslash { column: 4 });
        assert_eq!(lex_err(r"abc\"), SyntaxError::TrailingBackslash);
        assert_eq!(lex_err(r"\'x'"), SyntaxError::BadBackslash { column: 2 });
    }

    #[test]
    fn unclosed_quotes() {
        assert_eq!(lex_err(r#"push "route"#), SyntaxError::UnclosedQuote);
        assert_eq!(lex_err("push 'route"), SyntaxError::UnclosedSingleQuote);
        assert_eq!(lex_err(r#"push "a\""#), SyntaxError::UnclosedQuote);
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(lex_err("po\0rt 1"), SyntaxError::NulByte);
    }

    #[test]
    fn columns() {
        let t = lex_line(r#"  push  "x y" \"z"#, 7).expect("lexes");
        let cols: Vec<_> = t.iter().map(|t| (t.span.line, t.span.column)).collect();
        assert_eq!(cols, [(7, 3), (7, 9), (7, 15)]);
    }

    #[test]
    fn doubledash_and_bom() {
        let d = parse_str("\u{feff}--port 1194\n--\n-- x\n", "t").expect("parses");
        assert_eq!(d[0].name.value, "port");
        assert_eq!(d[0].name.span.column, 3);
        // "--" alone is shorter than three characters and kept.
        assert_eq!(d[1].name.value, "--");
        assert_eq!(d[2].name.value, "--");
        assert_eq!(d[2].args[0].value, "x");
    }

    #[test]
    fn line_numbers_and_crlf() {
        let text = "port 1194\r\n\r\n# c\r\nproto udp\r\n";
        let d = parse_str(text, "crlf.conf").expect("parses");
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].line, d[1].line), (1, 4));
        assert_eq!(d[1].args[0].value, "udp");
        assert_eq!(&*d[1].file, "crlf.conf");
    }

    #[test]
    fn inline_blocks() {
        let text = "verb 3\n<ca>\n-----BEGIN X-----\r\n  AAAA\n-----END X-----\n  </ca> trailing\nport 1\n";
        let d = parse_str(text, "t").expect("parses");
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].name.value, "ca");
        assert_eq!(d[1].line, 2);
        assert!(d[1].args.is_empty());
        assert_eq!(
            d[1].inline.as_deref(),
            Some("-----BEGIN X-----\n  AAAA\n-----END X-----\n")
        );
        assert_eq!((d[2].name.value.as_str(), d[2].line), ("port", 7));
        // `<ca> x` has two parameters and is not a block (OpenVPN checks !p[1]).
        let d = parse_str("<ca> x\n", "t").expect("parses");
        assert_eq!(d[0].name.value, "<ca>");
        assert!(d[0].inline.is_none());
        // Empty block.
        let d = parse_str("<tls-crypt>\n</tls-crypt>\n", "t").expect("parses");
        assert_eq!(d[0].inline.as_deref(), Some(""));
    }

    #[test]
    fn unterminated_inline_block_reports_its_line() {
        let err = parse_str("port 1\n\n<key>\nsecret\n</ca>\n", "s.conf").expect_err("must fail");
        match &err {
            ConfigError::Syntax { location, kind } => {
                assert_eq!(location.line, Some(3));
                assert_eq!(kind, &SyntaxError::UnterminatedInline { tag: "key".into() });
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "s.conf:3: inline block <key> has no closing </key>"
        );
    }

    #[test]
    fn stray_close_tag() {
        let err = parse_str("port 1\n</ca>\n", "s.conf").expect_err("must fail");
        assert!(
            matches!(err, ConfigError::Syntax { ref location, .. } if location.line == Some(2))
        );
    }

    #[test]
    fn error_line_numbers() {
        let err = parse_str("port 1\nproto udp\npush \"route\n", "x.conf").expect_err("fails");
        assert_eq!(
            err.to_string(),
            "x.conf:3: no closing quotation (\") on this line"
        );
    }

    #[test]
    fn debug_redacts_inline() {
        let d = parse_str("<key>\nPRIVATE\n</key>\n", "t").expect("parses");
        let s = format!("{:?}", d[0]);
        assert!(!s.contains("PRIVATE"), "{s}");
    }

    proptest::proptest! {
        #[test]
        fn lexer_never_panics(s in "\\PC*") {
            let _ = parse_str(&s, "fuzz");
        }

        #[test]
        fn lexer_never_panics_on_config_alphabet(s in "[ \\t\\r\\n\"'\\\\#;<>/a-c-]{0,64}") {
            let _ = parse_str(&s, "fuzz");
        }

        #[test]
        fn quoted_tokens_round_trip(args in proptest::collection::vec("[^\\x00\\r\\n]{0,20}", 1..6)) {
            // Emit each parameter double-quoted with escapes; lexing gives it back.
            let mut line = String::from("push");
            for a in &args {
                line.push_str(" \"");
                for c in a.chars() {
                    if c == '"' || c == '\\' {
                        line.push('\\');
                    }
                    line.push(c);
                }
                line.push('"');
            }
            let d = parse_str(&line, "p").expect("parses");
            let got: Vec<String> = d[0].args.iter().map(|a| a.value.clone()).collect();
            proptest::prop_assert_eq!(got, args);
        }
    }
}
