//! The vocabulary of the configuration table: [`Schema`] (an object's fields and rules),
//! [`Field`], [`Kind`] (a field's value domain), [`DefaultValue`] and [`Rule`]. The table itself
//! is [`crate::config`]'s (and [`crate::record_headers`]' for its `headers` object); both the
//! validator and the JSON Schema are derived from it there. A module of its own so the tables
//! of other modules can be written with it without importing the configuration.

use serde_json::{Map, Value};

/// A field's value domain.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A string with a length (in characters) between the bounds.
    String {
        /// Shortest length.
        min_length: u64,
        /// Longest length.
        max_length: u64,
    },
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// `true` or `false`.
    Boolean,
    /// An integer between the bounds (inclusive).
    Integer {
        /// Smallest value.
        minimum: i64,
        /// Largest value.
        maximum: i64,
    },
    /// An array of strings; `{}` is accepted as the empty array because Kong's cjson encodes
    /// an empty Lua array as `{}`.
    StringList {
        /// Shortest item length.
        item_min_length: u64,
        /// Longest item length.
        item_max_length: u64,
    },
    /// An object mapping header names (non-empty, not starting with `:`) to string values.
    HeaderMap,
    /// A nested object.
    Object(&'static Schema),
    /// A message template: any JSON value, its strings' placeholders checked by
    /// [`template::compile`] (the JSON Schema cannot check them: it accepts any value).
    Template,
    /// A string of at most `max_length` characters that `valid` accepts; `pattern` is the
    /// equivalent regular expression for the JSON Schema.
    Token {
        /// Longest length.
        max_length: u64,
        /// The JSON Schema `pattern`.
        pattern: &'static str,
        /// The code side of `pattern` (and of `max_length`).
        valid: fn(&str) -> bool,
        /// What the error message says is expected.
        expected: &'static str,
    },
}

/// A field's default, as the schema's `default` keyword shows it.
#[derive(Debug)]
pub(crate) enum DefaultValue {
    Bool(bool),
    Int(i64),
    Str(&'static str),
}

/// One configuration field.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) required: bool,
    pub(crate) default: Option<DefaultValue>,
    pub(crate) description: &'static str,
}

/// A constraint across the fields of one object.
#[derive(Debug)]
pub(crate) enum Rule {
    /// `field` must be present when enum field `when` (effective value, default included) equals
    /// `equals`. The default of `when` must differ from `equals`.
    RequiredWhen {
        field: &'static str,
        when: &'static str,
        equals: &'static str,
    },
    /// `field` may only be present when enum field `when` (effective value) equals `equals`.
    OnlyWhen {
        field: &'static str,
        when: &'static str,
        equals: &'static str,
    },
    /// At least one of the boolean `fields` (effective value, default included) must be true.
    AtLeastOneTrue {
        fields: &'static [&'static str],
        message: &'static str,
    },
    /// A rule of its own: `check` gives the error for an object that breaks it, `schema` the
    /// same rule as JSON Schema (`code_and_schema_agree` holds them together).
    Custom {
        check: fn(&Map<String, Value>) -> Option<String>,
        schema: fn() -> Value,
    },
}

/// An object's fields and cross-field rules.
#[derive(Debug)]
pub(crate) struct Schema {
    pub(crate) description: &'static str,
    pub(crate) fields: &'static [Field],
    pub(crate) rules: &'static [Rule],
}
