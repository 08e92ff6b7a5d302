//! Splitting a script into statements, as `agora query` (files, standard
//! input) and `agora shell` (lines typed until a statement ends) read them.
//!
//! The split uses sqlparser's tokenizer, so a `;` inside a string, a quoted
//! identifier or a comment does not end a statement; each statement is
//! sliced from the text as written (what the audit log then records).

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// What a piece of text is, statement-wise.
#[derive(Debug, PartialEq, Eq)]
pub enum Script {
    /// Complete statements (without their `;`), in order; text after the
    /// last `;` that holds more than whitespace and comments is the last one.
    Statements(Vec<String>),
    /// An unterminated string, quoted name or comment: more text is needed.
    Incomplete,
}

/// Splits `text` at the `;` that end statements.
pub fn split(text: &str) -> Script {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, text).tokenize_with_location() else {
        return Script::Incomplete;
    };
    let offsets = LineOffsets::new(text);
    let mut statements = Vec::new();
    let mut start = 0;
    let mut substantive = false;
    for token in tokens {
        match token.token {
            Token::SemiColon => {
                let end = offsets.byte(token.span.start.line, token.span.start.column);
                if substantive {
                    statements.push(text[start..end].trim().to_string());
                }
                start = (end + 1).min(text.len());
                substantive = false;
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => substantive = true,
        }
    }
    if substantive {
        statements.push(text[start..].trim().to_string());
    }
    Script::Statements(statements)
}

/// Whether `text` ends a statement: it holds something and its last token
/// (comments and whitespace aside) is a `;`. The shell reads lines until then.
pub fn is_complete(text: &str) -> bool {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, text).tokenize() else { return false };
    let mut last = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF));
    matches!(last.next_back(), Some(Token::SemiColon))
        && tokens.iter().any(|t| !matches!(t, Token::Whitespace(_) | Token::EOF | Token::SemiColon))
}

/// Byte offsets of (line, column) positions, as the tokenizer counts them
/// (both from 1, columns in characters).
struct LineOffsets<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        LineOffsets { text, starts }
    }

    fn byte(&self, line: u64, column: u64) -> usize {
        let line_start = self.starts.get(line.saturating_sub(1) as usize).copied().unwrap_or(self.text.len());
        self.text[line_start..]
            .char_indices()
            .nth(column.saturating_sub(1) as usize)
            .map(|(i, _)| line_start + i)
            .unwrap_or(self.text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(text: &str) -> Vec<String> {
        match split(text) {
            Script::Statements(s) => s,
            Script::Incomplete => panic!("incomplete: {text}"),
        }
    }

    #[test]
    fn semicolons_in_strings_names_and_comments_do_not_split() {
        let text = "SELECT 'a;b' AS \"x;y\"; -- one; two\nSELECT 2 /* ; */ ;\n\n  SELECT 3";
        assert_eq!(statements(text), vec!["SELECT 'a;b' AS \"x;y\"", "-- one; two\nSELECT 2 /* ; */", "SELECT 3"]);
    }

    #[test]
    fn empty_statements_and_trailing_comments_are_dropped() {
        assert_eq!(statements(";; SELECT 1;  ; -- done\n"), vec!["SELECT 1"]);
        assert!(statements("  \n-- nothing\n").is_empty());
    }

    #[test]
    fn multi_byte_text_is_sliced_at_characters() {
        assert_eq!(statements("SELECT 'é€';\nSELECT 'ü'"), vec!["SELECT 'é€'", "SELECT 'ü'"]);
    }

    #[test]
    fn open_strings_are_incomplete_and_a_statement_ends_with_its_semicolon() {
        assert_eq!(split("SELECT 'open"), Script::Incomplete);
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';'"));
        assert!(!is_complete("SELECT 'x;"));
        assert!(!is_complete(";"));
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1\nFROM t; -- done"));
    }
}
