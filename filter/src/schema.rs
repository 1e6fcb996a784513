//! The vocabulary of the configuration table: [`Schema`] (an object's fields and rules),
//! [`Field`], [`Kind`] (a field's value domain), [`DefaultValue`] and [`Rule`]. The table itself
//! is [`crate::config`]'s (and [`crate::record_headers`]' for its `headers` object); both the
//! validator and the JSON Schema are derived from it there. A module of its own so the tables
//! of other modules can be written with it without importing the configuration.
//!
//! What only the JSON Schema shows (descriptions, patterns, the custom rules' schemas) is held in
//! a [`SchemaOnly`]: natively, where `kafka_upstream.meta.json` is generated, it keeps its value;
//! in the `.wasm`, which never builds the schema, it is an empty marker, so neither the texts nor
//! the rule schemas' code are in the module (about 30 KB). The validator never reads them.

use serde_json::{Map, Value};

/// A value only the JSON Schema uses, see the module documentation. Built with [`text`] or
/// [`custom_schema`] (const functions, so the tables stay statics); read with [`SchemaOnly::get`]
/// (native builds only).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchemaOnly<T: Copy + 'static> {
    #[cfg(not(target_arch = "wasm32"))]
    value: T,
    #[cfg(target_arch = "wasm32")]
    _value: std::marker::PhantomData<T>,
}

#[cfg(not(target_arch = "wasm32"))]
impl<T: Copy + 'static> SchemaOnly<T> {
    /// The value.
    pub(crate) fn get(self) -> T {
        self.value
    }
}

/// A description or pattern of the JSON Schema.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const fn text(value: &'static str) -> SchemaOnly<&'static str> {
    SchemaOnly { value }
}

/// A description or pattern of the JSON Schema (dropped in the `.wasm`).
#[cfg(target_arch = "wasm32")]
pub(crate) const fn text(_: &'static str) -> SchemaOnly<&'static str> {
    SchemaOnly {
        _value: std::marker::PhantomData,
    }
}

/// A custom rule's JSON Schema.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const fn custom_schema(value: fn() -> Value) -> SchemaOnly<fn() -> Value> {
    SchemaOnly { value }
}

/// A custom rule's JSON Schema (dropped in the `.wasm`: its code is not linked).
#[cfg(target_arch = "wasm32")]
pub(crate) const fn custom_schema(_: fn() -> Value) -> SchemaOnly<fn() -> Value> {
    SchemaOnly {
        _value: std::marker::PhantomData,
    }
}

/// A member of a JSON object by name (`Map::get`, `Value::get` with a `&str`), kept out of line:
/// the map search inlined at each of the configuration's ~50 lookups cost ~10 KB of `.wasm`
/// code, and they only run when a configuration is read.
pub(crate) trait Member {
    /// The member `name`, if `self` is an object that has it.
    fn member(&self, name: &str) -> Option<&Value>;
}

impl Member for Map<String, Value> {
    #[inline(never)]
    fn member(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

impl Member for Value {
    fn member(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => map.member(name),
            _ => None,
        }
    }
}

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
        #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // read by the JSON Schema (native only)
        pattern: SchemaOnly<&'static str>,
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
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // read by the JSON Schema (native only)
    pub(crate) description: SchemaOnly<&'static str>,
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
        #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // read by the JSON Schema (native only)
        schema: SchemaOnly<fn() -> Value>,
    },
}

/// An object's fields and cross-field rules.
#[derive(Debug)]
pub(crate) struct Schema {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // read by the JSON Schema (native only)
    pub(crate) description: SchemaOnly<&'static str>,
    pub(crate) fields: &'static [Field],
    pub(crate) rules: &'static [Rule],
}
