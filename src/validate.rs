//! Input checks shared by the services' HTTP layers; each answers a 400 with a precise message.
//!
//! Each rule is also what the OpenAPI documents declare: the schema builders here
//! ([`text_schema`], [`optional_text_schema`], [`Categories`], [`at_least_one`]) and the
//! patterns ([`TEXT_PATTERN`], [`OPTIONAL_TEXT_PATTERN`]) state the checks below, and the unit
//! tests hold the patterns to the checks character by character, so a value the server refuses
//! is one the document refuses too (`scripts/fuzz.sh` runs schemathesis with every check on it).

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

use crate::config::Secret;
use crate::error::ApiError;

/// What [`text`] accepts, as the documents' `pattern` (ECMA-262): no control character
/// (Unicode category Cc, [`char::is_control`]) anywhere, and at least one character that is not
/// white space ([`char::is_whitespace`], what trimming removes).
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u001F\u007F-\u009F \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$";

/// What [`optional_text`] accepts, as the documents' `pattern`: no control character anywhere
/// (only white space means none).
pub const OPTIONAL_TEXT_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// Checks on a text as sent (before trimming, so that the document's `maxLength` and `pattern`
/// judge the same string): at most `max` characters, no control character. Returns it trimmed.
fn bounded<'v>(field: &str, value: &'v str, max: usize) -> Result<&'v str, ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.trim())
}

/// A text of at most `max` characters as sent, without control characters and not only white
/// space; trimmed.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = bounded(field, value, max)?;
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    Ok(value.to_string())
}

/// Like [`text`], but `None`, an empty string or only white space means "none".
pub fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => {
            let v = bounded(field, v, max)?;
            Ok((!v.is_empty()).then(|| v.to_string()))
        }
    }
}

/// `rule`, then `note` (what the field means; a field's own comment is not kept with
/// `schema_with`).
fn describe(rule: String, note: &str) -> Option<String> {
    Some(if note.is_empty() {
        rule
    } else {
        format!("{rule} {note}")
    })
}

/// The schema of a [`text`] of at most `max` characters (`null` too when `nullable`: left as it
/// is), described by its rule and `note`.
pub fn text_schema(max: usize, nullable: bool, note: &str) -> RefOr<Schema> {
    let rule = format!(
        "1 to {max} characters, not only white space, no control characters; surrounding white \
         space is trimmed."
    );
    ObjectBuilder::new()
        .schema_type(string_type(nullable))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(TEXT_PATTERN))
        .description(describe(rule, note))
        .into()
}

/// The schema of an [`optional_text`] of at most `max` characters (`null` too when
/// `nullable`), described by its rule and `note`.
pub fn optional_text_schema(max: usize, nullable: bool, note: &str) -> RefOr<Schema> {
    let rule = format!(
        "At most {max} characters, no control characters; surrounding white space is trimmed, \
         and empty or only white space means none."
    );
    ObjectBuilder::new()
        .schema_type(string_type(nullable))
        .max_length(Some(max))
        .pattern(Some(OPTIONAL_TEXT_PATTERN))
        .description(describe(rule, note))
        .into()
}

fn string_type(nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
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

/// Most `category` values one query may give (empty and repeated ones count: the document's
/// `maxItems` counts values as sent).
pub const MAX_CATEGORIES: usize = 20;

/// Longest category, of a product or in a query.
pub const MAX_CATEGORY: usize = 100;

/// The categories of a query (`?category=a&category=b`): at most [`MAX_CATEGORIES`] values, each
/// an [`optional_text`] of at most [`MAX_CATEGORY`] characters; empty values are ignored,
/// duplicates kept once, sorted (so one set of categories is one query). Empty: every category.
pub fn categories<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, ApiError> {
    let mut categories = std::collections::BTreeSet::new();
    for (i, value) in values.into_iter().enumerate() {
        if i == MAX_CATEGORIES {
            return Err(ApiError::invalid(format!(
                "at most {MAX_CATEGORIES} categories per query"
            )));
        }
        if let Some(category) = optional_text("category", Some(value), MAX_CATEGORY)? {
            categories.insert(category);
        }
    }
    Ok(categories.into_iter().collect())
}

/// Schema only: the `category` query parameter [`categories`] reads, for
/// `#[param(value_type = Option<Categories>, inline)]` (which keeps the parameter's comment).
pub struct Categories;

impl utoipa::PartialSchema for Categories {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(optional_text_schema(MAX_CATEGORY, false, ""))
            .max_items(Some(MAX_CATEGORIES))
            .into()
    }
}

impl utoipa::ToSchema for Categories {}

/// A JSON number that JSON Schema counts as an integer (`5`, and `5.0` too), if it is one in
/// `0..=u64::MAX`.
pub fn integral(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
            .map(|f| f as u64)
    })
}

/// Deserializes an optional count given as a JSON integer, `5.0` included (JSON Schema's
/// `integer` admits it, and the documents say `integer`); out of `u32` is an error.
pub fn optional_count<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    use serde::Deserialize;
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => integral(&v)
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected a whole number, found {v}"))),
    }
}

/// How a field counts towards [`at_least_one`].
#[derive(Clone, Copy)]
pub enum Given {
    /// Given with a value of one of these types (`null` means "leave as it is").
    Value(&'static [Type]),
    /// Given at all (`null` is a change too, e.g. clearing).
    Present,
}

/// The schema of a body `component` (the `$ref` name of its derived schema) that must give at
/// least one of `fields`: `allOf` the component and `anyOf` one `required` per field. An update
/// that changes nothing is refused with `400`, and this says so in the document.
pub fn at_least_one(component: &str, fields: &[(&str, Given)]) -> RefOr<Schema> {
    use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder};
    use utoipa::openapi::Ref;
    let mut any_of = AnyOfBuilder::new();
    for &(field, given) in fields {
        let mut branch = ObjectBuilder::new().required(field);
        if let Given::Value(types) = given {
            let kind = match types {
                [one] => SchemaType::Type(one.clone()),
                many => SchemaType::from_iter(many.iter().cloned()),
            };
            branch = branch.property(field, ObjectBuilder::new().schema_type(kind));
        }
        any_of = any_of.item(branch);
    }
    let names: Vec<String> = fields
        .iter()
        .map(|(field, given)| match given {
            Given::Value(_) => format!("`{field}` (not `null`)"),
            Given::Present => format!("`{field}`"),
        })
        .collect();
    AllOfBuilder::new()
        .item(Ref::from_schema_name(component))
        .item(any_of)
        .description(Some(format!(
            "Changes something: gives at least one of {}; otherwise `400`.",
            names.join(", ")
        )))
        .into()
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
        assert_eq!(optional_text("c", Some("  "), 5).unwrap(), None);
    }

    #[test]
    /// The length limit and the control characters are judged on the text as sent, as the
    /// documents' `maxLength` and `pattern` judge it: trimming does not make room or hide one.
    fn texts_are_judged_as_sent() {
        assert!(text("name", &format!("{} ", "x".repeat(10)), 10).is_err());
        assert!(text("name", "Ann\n", 10).is_err());
        assert!(optional_text("c", Some("\t"), 5).is_err());
        assert!(optional_text("c", Some(&" ".repeat(6)), 5).is_err());
    }

    fn pattern(pattern: &str) -> jsonschema::Validator {
        jsonschema::validator_for(&serde_json::json!({"type": "string", "pattern": pattern}))
            .expect("the pattern compiles")
    }

    #[test]
    /// [`TEXT_PATTERN`] and [`OPTIONAL_TEXT_PATTERN`], read by a JSON Schema validator, accept
    /// exactly what [`text`] and [`optional_text`] accept: every Unicode scalar value alone, amid
    /// other text and beside white space.
    fn the_documented_patterns_are_the_checks() {
        let (text_pattern, optional_pattern) =
            (pattern(TEXT_PATTERN), pattern(OPTIONAL_TEXT_PATTERN));
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            for value in [c.to_string(), format!("a{c}b"), format!(" {c}")] {
                let json = serde_json::Value::String(value.clone());
                assert_eq!(
                    text_pattern.is_valid(&json),
                    text("f", &value, 3).is_ok(),
                    "TEXT_PATTERN and text() disagree on {value:?}"
                );
                assert_eq!(
                    optional_pattern.is_valid(&json),
                    optional_text("f", Some(&value), 3).is_ok(),
                    "OPTIONAL_TEXT_PATTERN and optional_text() disagree on {value:?}"
                );
            }
        }
    }

    #[test]
    /// A query gives at most 20 `category` values, empty and repeated ones included (the
    /// document's `maxItems`); what is kept is the set of non-empty ones.
    fn categories_count_the_values_sent() {
        assert!(categories([""; MAX_CATEGORIES]).unwrap().is_empty());
        assert!(categories([""; MAX_CATEGORIES + 1]).is_err());
        assert!(categories(["a"; MAX_CATEGORIES + 1]).is_err());
        assert_eq!(categories(["b", " a ", "", "b"]).unwrap(), ["a", "b"]);
        assert!(categories(["a\u{7f}"]).is_err());
    }

    #[test]
    /// A whole number is an integer whether written `5` or `5.0`, as in JSON Schema.
    fn whole_numbers() {
        use serde_json::json;
        assert_eq!(integral(&json!(5)), Some(5));
        assert_eq!(integral(&json!(5.0)), Some(5));
        for not in [json!(5.5), json!(-1), json!(-1.0), json!("5"), json!(null)] {
            assert_eq!(integral(&not), None, "{not}");
        }
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "optional_count")]
            quantity: Option<u32>,
        }
        let parse = |body: &str| serde_json::from_str::<Body>(body).map(|b| b.quantity);
        assert_eq!(parse(r#"{"quantity": 573.0}"#).unwrap(), Some(573));
        assert_eq!(parse(r#"{"quantity": null}"#).unwrap(), None);
        assert_eq!(parse("{}").unwrap(), None);
        assert!(parse(r#"{"quantity": 1.5}"#).is_err());
        assert!(parse(r#"{"quantity": 5000000000}"#).is_err());
    }

    #[test]
    /// Passwords are 8..=128 characters.
    fn passwords() {
        assert!(password("short").is_err());
        assert!(password("long enough").is_ok());
        assert!(password(&"p".repeat(129)).is_err());
    }
}
