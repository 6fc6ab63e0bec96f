//! Reading a [`Row`] into any `Deserialize` type, one column at a time, so a failure
//! names its column and SQL's habits (booleans as integers, sums as decimals) fit
//! Rust's types.

use super::{Row, Value, whole_decimal};
use serde::de::value::{SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A decoding failure; the row fills in `column` once it knows which one failed.
#[derive(Debug)]
pub(super) struct DeError {
    pub column: Option<String>,
    pub message: String,
}

impl DeError {
    fn in_column(mut self, name: &str) -> Self {
        self.column.get_or_insert_with(|| name.to_string());
        self
    }

    fn json(e: serde_json::Error) -> Self {
        de::Error::custom(e)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            column: None,
            message: msg.to_string(),
        }
    }

    fn invalid_type(found: de::Unexpected, expected: &dyn de::Expected) -> Self {
        let found = match found {
            de::Unexpected::Unit => "null".to_string(),
            other => other.to_string(),
        };
        de::Error::custom(format_args!("expected {expected}, found {found}"))
    }

    fn invalid_value(found: de::Unexpected, expected: &dyn de::Expected) -> Self {
        Self::invalid_type(found, expected)
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            column: Some(field.to_string()),
            message: "the result has no such column".to_string(),
        }
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        DeError {
            column: Some(field.to_string()),
            message: "the type has no field of that name".to_string(),
        }
    }
}

/// A row: a map from column name to value, or a sequence of values for a tuple.
pub(super) struct RowDeserializer<'a>(pub &'a Row);

impl<'de> de::Deserializer<'de> for RowDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Fields {
            row: self.0,
            next: 0,
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(Fields {
            row: self.0,
            next: 0,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct map struct enum identifier ignored_any
    }
}

/// Walks a row's columns, as map entries or as sequence elements.
struct Fields<'a> {
    row: &'a Row,
    next: usize,
}

impl Fields<'_> {
    /// Reads the next column's value with `seed`, naming the column on failure.
    fn read<'de, S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        let i = self.next;
        self.next += 1;
        let value = self.row.values.get(i).unwrap_or(&Value::Null);
        let name = self.row.columns.get(i).map_or("", String::as_str);
        seed.deserialize(ValueDeserializer(value))
            .map_err(|e| e.in_column(name))
    }
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(name) = self.row.columns.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, DeError> = name.as_str().into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        self.read(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.row.columns.len().saturating_sub(self.next))
    }
}

impl<'de> SeqAccess<'de> for Fields<'_> {
    type Error = DeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        if self.next >= self.row.values.len() {
            return Ok(None);
        }
        self.read(seed).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.row.values.len().saturating_sub(self.next))
    }
}

/// One column value. A JSON value hands every request to its parsed document; the
/// others answer by kind, bending where SQL and Rust disagree.
struct ValueDeserializer<'a>(&'a Value);

fn parse_json(text: &str) -> Result<serde_json::Value, DeError> {
    serde_json::from_str(text)
        .map_err(|e| de::Error::custom(format_args!("the column holds invalid JSON: {e}")))
}

/// Visits a whole number with the narrowest call a visitor is sure to support.
fn visit_whole<'de, V: Visitor<'de>>(n: i128, visitor: V) -> Result<V::Value, DeError> {
    if let Ok(n) = i64::try_from(n) {
        visitor.visit_i64(n)
    } else if let Ok(n) = u64::try_from(n) {
        visitor.visit_u64(n)
    } else {
        visitor.visit_i128(n)
    }
}

/// Methods that send a JSON value to its document and everything else to `deserialize_any`.
macro_rules! json_or_any {
    ($($method:ident($($arg:ident: $ty:ty),*))*) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, DeError> {
            match self.0 {
                Value::Json(text) => parse_json(text)?.$method($($arg,)* visitor).map_err(DeError::json),
                _ => self.deserialize_any(visitor),
            }
        })*
    };
}

/// Integer methods: as `json_or_any`, and a whole decimal is a number.
macro_rules! integers {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.0 {
                Value::Json(text) => parse_json(text)?.$method(visitor).map_err(DeError::json),
                Value::Decimal(d) => match whole_decimal(d) {
                    Some(n) => visit_whole(n, visitor),
                    None => self.deserialize_any(visitor),
                },
                _ => self.deserialize_any(visitor),
            }
        })*
    };
}

/// Float methods: as `json_or_any`, and a decimal is a number.
macro_rules! floats {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self.0 {
                Value::Json(text) => parse_json(text)?.$method(visitor).map_err(DeError::json),
                Value::Decimal(d) => match d.parse::<f64>() {
                    Ok(f) => visitor.visit_f64(f),
                    Err(_) => self.deserialize_any(visitor),
                },
                _ => self.deserialize_any(visitor),
            }
        })*
    };
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Int(n) => visitor.visit_i64(*n),
            Value::Uint(n) => visitor.visit_u64(*n),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Decimal(s)
            | Value::Text(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Datetime(s) => visitor.visit_str(s),
            Value::Binary(b) => {
                SeqDeserializer::<_, DeError>::new(b.iter().copied()).deserialize_any(visitor)
            }
            Value::Json(text) => parse_json(text)?
                .deserialize_any(visitor)
                .map_err(DeError::json),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            // SQLite and MySQL keep booleans as integers (and BIT(1) as one byte).
            Value::Int(n @ (0 | 1)) => visitor.visit_bool(*n == 1),
            Value::Uint(n @ (0 | 1)) => visitor.visit_bool(*n == 1),
            Value::Binary(b) if matches!(b[..], [0] | [1]) => visitor.visit_bool(b[0] == 1),
            Value::Json(text) => parse_json(text)?
                .deserialize_bool(visitor)
                .map_err(DeError::json),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => visitor.visit_str(s),
                Err(_) => self.deserialize_any(visitor),
            },
            Value::Json(text) => parse_json(text)?
                .deserialize_str(visitor)
                .map_err(DeError::json),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Binary(b) => visitor.visit_bytes(b),
            Value::Text(s) => visitor.visit_bytes(s.as_bytes()),
            Value::Json(text) => parse_json(text)?
                .deserialize_bytes(visitor)
                .map_err(DeError::json),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            Value::Json(text) => parse_json(text)?
                .deserialize_option(visitor)
                .map_err(DeError::json),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Json(text) => parse_json(text)?
                .deserialize_newtype_struct(name, visitor)
                .map_err(DeError::json),
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            // Text naming a unit variant, as a MySQL ENUM column holds.
            Value::Text(s) => {
                let variant: StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(variant)
            }
            Value::Json(text) => parse_json(text)?
                .deserialize_enum(name, variants, visitor)
                .map_err(DeError::json),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    integers! { deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
    deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128 }

    floats! { deserialize_f32 deserialize_f64 }

    json_or_any! {
        deserialize_char()
        deserialize_unit()
        deserialize_unit_struct(name: &'static str)
        deserialize_seq()
        deserialize_tuple(len: usize)
        deserialize_tuple_struct(name: &'static str, len: usize)
        deserialize_map()
        deserialize_struct(name: &'static str, fields: &'static [&'static str])
        deserialize_identifier()
    }
}
