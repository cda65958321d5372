//! The management interface's command line syntax (OpenVPN management-notes.txt
//! "Command Parsing", options.c `parse_line`): white space separates parameters,
//! `"..."` and `'...'` quote, a backslash escapes the next character outside single
//! quotes (`\\`, `\"`, `\ `), and at most [`MAX_PARMS`] parameters are kept.

/// OpenVPN options.h `MAX_PARMS`.
pub const MAX_PARMS: usize = 16;

/// Splits one command line into parameters. A quote left open ends the line, as a
/// newline would in OpenVPN (the parameter is kept).
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_token = true;
            }
            (Some('"'), '"') => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_token = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                    if out.len() == MAX_PARMS {
                        return out;
                    }
                }
            }
            (None, c) => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if in_token && out.len() < MAX_PARMS {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters() {
        assert_eq!(tokenize("  state  on all "), ["state", "on", "all"]);
        assert_eq!(
            tokenize(r#"client-deny 1 2 "bad password" 'Sorry, no'"#),
            ["client-deny", "1", "2", "bad password", "Sorry, no"]
        );
        assert_eq!(
            tokenize(r#"push "route 10.1.0.0 255.255.0.0""#),
            ["push", "route 10.1.0.0 255.255.0.0"]
        );
        assert_eq!(
            tokenize(r#"echo a\ b \"q\" 'x\y'"#),
            ["echo", "a b", "\"q\"", "x\\y"]
        );
        assert_eq!(tokenize(r#"x """#), ["x", ""]);
        assert!(tokenize("   ").is_empty());
        let many = "a ".repeat(40);
        assert_eq!(tokenize(&many).len(), MAX_PARMS);
    }
}
