//! Input checks shared by the services' HTTP layers; each answers a 400 with a precise message.

use crate::config::Secret;
use crate::error::ApiError;

/// A trimmed, non-empty text of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.to_string())
}

/// Like [`text`], but `None` or an empty string means "none".
pub fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(field, v, max).map(Some),
    }
}

/// A plausible email address, normalized to lower case (emails are unique case-insensitively).
pub fn email(value: &str) -> Result<String, ApiError> {
    let value = value.trim().to_lowercase();
    let invalid = || ApiError::invalid("email is not a valid address");
    if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if local.is_empty() || local.len() > 64 || !domain_ok {
        return Err(invalid());
    }
    Ok(value)
}

/// A password of 8..=128 characters.
pub fn password(value: &str) -> Result<Secret, ApiError> {
    let n = value.chars().count();
    if !(8..=128).contains(&n) {
        return Err(ApiError::invalid("password must be 8 to 128 characters"));
    }
    Ok(Secret::new(value))
}

/// A page size in `1..=max`, `default` when absent.
pub fn limit(value: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

/// Most categories one query may name.
pub const MAX_CATEGORIES: usize = 20;

/// The categories of a query (`?category=a&category=b`), each at most `max` characters, at most
/// [`MAX_CATEGORIES`]; empty values are ignored, duplicates kept once, sorted (so one set of
/// categories is one query). Empty: every category.
pub fn categories<'a>(
    values: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Result<Vec<String>, ApiError> {
    let mut categories = std::collections::BTreeSet::new();
    for value in values {
        if let Some(category) = optional_text("category", Some(value), max)? {
            categories.insert(category);
        }
        if categories.len() > MAX_CATEGORIES {
            return Err(ApiError::invalid(format!(
                "at most {MAX_CATEGORIES} categories per query"
            )));
        }
    }
    Ok(categories.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Emails are trimmed and lower-cased; malformed ones are rejected.
    fn emails() {
        assert_eq!(email(" John@Example.COM ").unwrap(), "john@example.com");
        for bad in [
            "",
            "john",
            "john@",
            "@example.com",
            "a@b",
            "a b@c.de",
            "a@@b.de",
            "a@b..de",
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    /// Text fields are trimmed, bounded and free of control characters.
    fn texts() {
        assert_eq!(text("name", "  Ann ", 10).unwrap(), "Ann");
        assert!(text("name", "   ", 10).is_err());
        assert!(text("name", &"x".repeat(11), 10).is_err());
        assert!(text("name", "a\u{0}b", 10).is_err());
        assert_eq!(optional_text("c", Some(""), 5).unwrap(), None);
    }

    #[test]
    /// Passwords are 8..=128 characters.
    fn passwords() {
        assert!(password("short").is_err());
        assert!(password("long enough").is_ok());
        assert!(password(&"p".repeat(129)).is_err());
    }
}
