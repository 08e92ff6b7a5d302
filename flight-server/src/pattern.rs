//! Name patterns of the metadata commands (GetTables, GetDbSchemas).
//!
//! Flight SQL's filter patterns are SQL `LIKE` patterns: `%` matches any run
//! of characters, `_` one character, and, as in JDBC's `getSearchStringEscape`,
//! `\` makes the next character literal (`sales\_eu` names only `sales_eu`).
//! Clients send them unchecked from user input, so matching must stay cheap
//! for any pattern: this matcher backtracks only to the last `%` seen, which
//! bounds its work by the product of the two lengths (the naive recursive
//! matcher is exponential in the number of `%`), and patterns are capped.

use tonic::Status;

/// Longest pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `%`
    Any,
    /// `_`
    One,
    /// Any other character, or an escaped one.
    Literal(char),
}

/// A parsed pattern.
#[derive(Debug, Clone)]
pub struct NamePattern {
    tokens: Vec<Token>,
}

impl NamePattern {
    /// Parses `pattern`, refusing one over [`MAX_PATTERN_CHARS`].
    pub fn parse(pattern: &str, field: &str) -> Result<Self, Status> {
        let length = pattern.chars().count();
        if length > MAX_PATTERN_CHARS {
            return Err(Status::invalid_argument(format!(
                "{field} is {length} characters long, over the limit of {MAX_PATTERN_CHARS}"
            )));
        }
        let mut tokens = Vec::with_capacity(length);
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '%' => Token::Any,
                '_' => Token::One,
                // A trailing backslash stands for itself.
                '\\' => Token::Literal(chars.next().unwrap_or('\\')),
                other => Token::Literal(other),
            };
            // `%%` is the same as `%`: collapsing keeps the tokens short.
            if !(token == Token::Any && tokens.last() == Some(&Token::Any)) {
                tokens.push(token);
            }
        }
        Ok(NamePattern { tokens })
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let p = &self.tokens;
        let (mut pi, mut ti) = (0usize, 0usize);
        // Where the last `%` was, and the text position it currently covers up to.
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            match p.get(pi) {
                Some(Token::Any) => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(Token::One) => {
                    pi += 1;
                    ti += 1;
                }
                Some(Token::Literal(c)) if *c == text[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    // Let the last `%` swallow one more character and retry.
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|t| *t == Token::Any)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn like(pattern: &str, text: &str) -> bool {
        NamePattern::parse(pattern, "pattern").unwrap().matches(text)
    }

    #[test]
    fn like_patterns() {
        assert!(like("%", "anything"));
        assert!(like("%", ""));
        assert!(like("sal%", "sales"));
        assert!(like("_ales", "sales"));
        assert!(!like("_ales", "ales"));
        assert!(like("order_", "orders"));
        assert!(!like("orders", "order"));
        assert!(like("%item", "lineitem"));
        assert!(like("%i%e%", "lineitem"));
        assert!(!like("%x%", "lineitem"));
        assert!(like("a%b%c", "aXbYbc"));
        assert!(!like("a%b%c", "aXbYbcd"));
    }

    #[test]
    fn backslash_escapes_wildcards() {
        assert!(like(r"sales\_eu", "sales_eu"));
        assert!(!like(r"sales\_eu", "salesXeu"));
        assert!(like("sales_eu", "salesXeu"));
        assert!(!like(r"sal\%", "sales"));
        assert!(like(r"sal\%", "sal%"));
        assert!(like(r"a\\b", r"a\b"));
    }

    #[test]
    fn pathological_patterns_are_cheap_and_long_ones_refused() {
        let pattern = format!("{}b", "%a".repeat(500));
        let text = "a".repeat(2000);
        let started = Instant::now();
        assert!(!like(&pattern, &text));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let err = NamePattern::parse(&"%".repeat(100_000), "table_name_filter_pattern").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("table_name_filter_pattern"), "{}", err.message());
    }
}
