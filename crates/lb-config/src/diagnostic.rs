//! Errors and warnings about a config file, each pointing at a line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding. `line` and `column` are 1-based (column counts characters, not bytes) and
/// point at the offending value, or at the key or table when the value is absent; both are 0
/// when the finding concerns no position (the file could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.severity,
                self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.severity,
                self.message
            )
        }
    }
}

/// The errors (and any warnings found alongside) that made a config invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects diagnostics for one file, turning byte spans into line and column.
pub(crate) struct Sink<'a> {
    file: &'a Path,
    text: &'a str,
    pub(crate) found: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            found: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(Severity::Error, span, message.into());
    }

    pub(crate) fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(Severity::Warning, span, message.into());
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.found.iter().any(|d| d.severity == Severity::Error)
    }

    /// 1-based line of a byte offset, for messages such as "defined at line 5".
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        line_column(self.text, offset).0
    }

    fn push(&mut self, severity: Severity, span: Range<usize>, message: String) {
        let (line, column) = line_column(self.text, span.start);
        self.found.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line,
            column,
            message,
        });
    }

    /// Diagnostics in file order, errors before warnings on the same spot.
    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.found.sort_by_key(|d| (d.line, d.column, d.severity));
        self.found
    }
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
/// character are clamped to the nearest earlier character boundary.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes; the '=' after it is the 4th character of line 2.
        assert_eq!(line_column(text, 10), (2, 4));
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 1000), (3, 1));
    }

    #[test]
    fn diagnostic_display_names_file_line_column_and_severity() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from("/etc/lb.toml"),
            line: 12,
            column: 13,
            message: "hold_time 2s is too short: expected 0s or at least 3s".into(),
        };
        assert_eq!(
            d.to_string(),
            "/etc/lb.toml:12:13: error: hold_time 2s is too short: expected 0s or at least 3s"
        );
        let all = Diagnostics(vec![
            d.clone(),
            Diagnostic {
                severity: Severity::Warning,
                ..d
            },
        ]);
        assert_eq!(all.to_string().lines().count(), 2);
        assert!(
            all.to_string()
                .lines()
                .nth(1)
                .unwrap()
                .contains(": warning: ")
        );
    }
}
