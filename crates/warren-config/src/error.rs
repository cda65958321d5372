//! Errors and warnings, each carrying `file:line`.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A place in a config: the file (or origin name) and, when the problem is on
/// one line, that line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The config file path or origin name.
    pub file: Arc<str>,
    /// 1-based line, `None` when the problem concerns the whole file (for
    /// example a missing directive).
    pub line: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.file, line),
            None => write!(f, "{}", self.file),
        }
    }
}

/// A lexer error inside one line or inline block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// `"` without its closing partner on the same line.
    #[error("no closing quotation (\") on this line")]
    UnclosedQuote,
    /// `'` without its closing partner on the same line.
    #[error("no closing single quotation (') on this line")]
    UnclosedSingleQuote,
    /// A backslash before anything but `\`, `"` or whitespace.
    #[error(
        "bad backslash ('\\') usage at column {column}: a backslash may only escape \\, \" or a space; \
         write Windows paths with double backslashes (\"c:\\\\dir\\\\file\")"
    )]
    BadBackslash {
        /// 1-based column of the escaped character.
        column: u32,
    },
    /// A backslash as the last character of a line.
    #[error("backslash at the end of the line (lines cannot be continued)")]
    TrailingBackslash,
    /// `<tag>` opened but never closed.
    #[error("inline block <{tag}> has no closing </{tag}>")]
    UnterminatedInline {
        /// The tag name, without brackets.
        tag: String,
    },
    /// `</tag>` without an opening `<tag>`.
    #[error("`{tag}` closes an inline block that was never opened")]
    StrayCloseTag {
        /// The closing tag as written.
        tag: String,
    },
    /// A NUL byte in the text.
    #[error("NUL byte in the config text")]
    NulByte,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text could not be split into directives.
    #[error("{location}: {kind}")]
    Syntax {
        /// Where.
        location: Location,
        /// What.
        kind: SyntaxError,
    },
    /// Neither warren nor OpenVPN 2.6 knows this directive.
    #[error("{location}: unknown directive `{name}`{hint}", hint = Hint(*suggestion))]
    UnknownDirective {
        /// Where.
        location: Location,
        /// The directive as written.
        name: String,
        /// The closest known directive name, if one is close.
        suggestion: Option<&'static str>,
    },
    /// An OpenVPN directive that warren does not implement, or refuses.
    #[error("{location}: `{name}` is not supported by warren: {reason}")]
    Unsupported {
        /// Where.
        location: Location,
        /// The directive.
        name: String,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// A directive with the wrong number of parameters.
    #[error("{location}: `{directive}` takes {expected}, found {found}")]
    ArgCount {
        /// Where.
        location: Location,
        /// The directive.
        directive: String,
        /// The accepted count, in words.
        expected: &'static str,
        /// How many parameters were given.
        found: usize,
    },
    /// A parameter that does not parse or is not allowed.
    #[error("{location}: `{directive}`: invalid value \"{value}\": {reason}")]
    InvalidValue {
        /// Where.
        location: Location,
        /// The directive.
        directive: String,
        /// The offending parameter, unquoted.
        value: String,
        /// What was expected.
        reason: Cow<'static, str>,
    },
    /// An inline `<tag>` block for a directive that only takes parameters.
    #[error("{location}: `{directive}` cannot be given as an inline <{directive}> block")]
    InlineNotAllowed {
        /// Where.
        location: Location,
        /// The directive.
        directive: String,
    },
    /// Two directives that cannot be combined.
    #[error("{location}: {message}")]
    Conflict {
        /// The later of the two.
        location: Location,
        /// What conflicts with what.
        message: Cow<'static, str>,
    },
    /// A required directive is absent.
    #[error("{file}: missing `{directive}`: {why}")]
    Missing {
        /// The config.
        file: Arc<str>,
        /// The directive that must be added.
        directive: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// The config file itself could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The config file is not UTF-8.
    #[error("{location}: the config file is not valid UTF-8")]
    NotUtf8 {
        /// The first line with invalid bytes.
        location: Location,
    },
    /// A key, certificate or credentials file named by a directive could not
    /// be read.
    #[error("cannot read {what} {}: {source}", path.display(), what = MaterialWhat(*directive))]
    ReadMaterial {
        /// The directive that names the file, when known.
        directive: Option<&'static str>,
        /// The path that was opened.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

struct Hint(Option<&'static str>);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, "; did you mean `{s}`?"),
            None => Ok(()),
        }
    }
}

struct MaterialWhat(Option<&'static str>);

impl fmt::Display for MaterialWhat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "`{d}` file"),
            None => f.write_str("file"),
        }
    }
}

impl ConfigError {
    /// Where the problem is, when it is in a config file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { location, .. }
            | ConfigError::UnknownDirective { location, .. }
            | ConfigError::Unsupported { location, .. }
            | ConfigError::ArgCount { location, .. }
            | ConfigError::InvalidValue { location, .. }
            | ConfigError::InlineNotAllowed { location, .. }
            | ConfigError::Conflict { location, .. }
            | ConfigError::NotUtf8 { location } => Some(location),
            ConfigError::Missing { .. }
            | ConfigError::ReadConfig { .. }
            | ConfigError::ReadMaterial { .. } => None,
        }
    }
}

/// Something accepted but worth telling the admin: an ignored directive, a
/// default that differs from OpenVPN's, or a setting that weakens security.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub location: Location,
    /// The directive concerned.
    pub directive: String,
    /// What warren does about it.
    pub message: Cow<'static, str>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}`: {}",
            self.location, self.directive, self.message
        )
    }
}
