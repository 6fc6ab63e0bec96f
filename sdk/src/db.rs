//! SQL on the app's database (`wharf:platform/sql`).
//!
//! wharf owns the database: MySQL or MariaDB (writes go to the primary, reads may be
//! served by a replica) or, when none is configured, an embedded SQLite file per app.
//! The app never sees an address or a password; its manifest asks for the database
//! with `database = true`.
//!
//! Statements are prepared and their parameters bound, never spliced into the text:
//! write `?` where a value goes and pass the values, in order, as [`Value`]s (`.into()`
//! converts numbers, text, bytes, `bool`, `Option` and JSON). [`query`] runs a read and
//! returns [`Rows`]; [`execute`] runs a write and returns an [`ExecResult`];
//! [`transaction`] groups statements on the primary.
//!
//! Read a column with [`Row::get`], or a whole row into your own type with
//! [`Row::to_struct`]. Every failure is an [`Error`], which is also a response (503
//! with `Retry-After` when the database is unavailable, 504 on a timeout, 409 on a
//! constraint violation, else 500), so a handler returning `Result<Response, Response>`
//! can use `?` on database calls and on [`Request::json`](crate::Request::json) alike.
//!
//! ```no_run
//! use wharf_sdk::{db, Request, Response};
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct User {
//!     id: u64,
//!     name: String,
//!     admin: bool,
//! }
//!
//! fn user(req: Request) -> Result<Response, Response> {
//!     let id: u64 = req
//!         .param("id")
//!         .and_then(|id| id.parse().ok())
//!         .ok_or_else(Response::not_found)?;
//!     let rows = db::query("SELECT id, name, admin FROM users WHERE id = ?", &[id.into()])?;
//!     let user: User = rows.into_first().ok_or_else(Response::not_found)?.to_struct()?;
//!     Ok(Response::json(&user))
//! }
//!
//! fn rename(req: Request) -> Result<Response, Response> {
//!     let name: String = req.json()?;
//!     let id = req.param("id").unwrap_or_default();
//!     let done = db::execute("UPDATE users SET name = ? WHERE id = ?", wharf_sdk::params![name, id])?;
//!     Ok(Response::new(if done.rows_affected == 0 { 404 } else { 204 }))
//! }
//! ```

mod de;

use crate::bindings::wharf::platform::sql;
use crate::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;

/// A parameter or a column value.
///
/// Dates and times are ISO 8601 text: `date` is `YYYY-MM-DD`, `time` is
/// `[-]HH:MM:SS[.ffffff]`, `datetime` is `YYYY-MM-DD HH:MM:SS[.ffffff]` (also for
/// TIMESTAMP columns). `Decimal` is exact decimal text such as `-12.50`. Most Rust
/// values convert with `.into()`: integers, floats, `bool` (as 0 or 1), text, bytes,
/// `Option` (`None` is `Null`) and `serde_json::Value` (as `Json`).
///
/// ```
/// use wharf_sdk::db::Value;
/// assert_eq!(Value::from(7), Value::Int(7));
/// assert_eq!(Value::from(true), Value::Int(1));
/// assert_eq!(Value::from("ada"), Value::Text("ada".into()));
/// assert_eq!(Value::from(None::<i64>), Value::Null);
/// assert_eq!(Value::from(serde_json::json!([1, 2])), Value::Json("[1,2]".into()));
/// ```
// The variants mirror the WIT `value` variant exactly: the bindings use this type
// directly (see `bindings` in lib.rs), so its shape must not change on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (MySQL `BIGINT UNSIGNED` values above `i64::MAX`, for one).
    Uint(u64),
    /// A floating-point number.
    Float(f64),
    /// An exact decimal number as text, such as `-12.50`.
    Decimal(String),
    /// Text.
    Text(String),
    /// Bytes.
    Binary(Vec<u8>),
    /// A date, `YYYY-MM-DD`.
    Date(String),
    /// A time of day or a duration, `[-]HH:MM:SS[.ffffff]`.
    Time(String),
    /// A date and time, `YYYY-MM-DD HH:MM:SS[.ffffff]`.
    Datetime(String),
    /// A JSON document as text.
    Json(String),
}

impl Value {
    /// The name of the value's kind, as in the WIT: `null`, `int`, `uint`, `float`,
    /// `decimal`, `text`, `binary`, `date`, `time`, `datetime` or `json`.
    ///
    /// ```
    /// # use wharf_sdk::db::Value;
    /// assert_eq!(Value::Datetime("2024-05-01 12:00:00".into()).kind(), "datetime");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Float(_) => "float",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Binary(_) => "binary",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Datetime(_) => "datetime",
            Value::Json(_) => "json",
        }
    }

    /// Whether the value is SQL `NULL`.
    ///
    /// ```
    /// # use wharf_sdk::db::Value;
    /// assert!(Value::Null.is_null());
    /// assert!(!Value::Int(0).is_null());
    /// ```
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as JSON: numbers stay numbers, `Null` is `null`, decimals, text,
    /// dates and times are strings, bytes an array of numbers, and `Json` the parsed
    /// document (or a string, should its text not be valid JSON). A float that JSON
    /// cannot hold (NaN, infinity) is `null`.
    ///
    /// ```
    /// # use wharf_sdk::db::Value;
    /// use serde_json::json;
    /// assert_eq!(Value::Decimal("1.50".into()).to_json(), json!("1.50"));
    /// assert_eq!(Value::Binary(vec![1, 2]).to_json(), json!([1, 2]));
    /// assert_eq!(Value::Json(r#"{"a":1}"#.into()).to_json(), json!({ "a": 1 }));
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Int(n) => J::from(*n),
            Value::Uint(n) => J::from(*n),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Decimal(s)
            | Value::Text(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Datetime(s) => J::String(s.clone()),
            Value::Binary(b) => J::from(b.as_slice()),
            Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone())),
        }
    }

    /// The kind with a glimpse of the value, for error messages: `int 300`, `text`.
    fn describe(&self) -> String {
        match self {
            Value::Int(n) => format!("int {n}"),
            Value::Uint(n) => format!("uint {n}"),
            Value::Float(f) => format!("float {f}"),
            Value::Decimal(d) => format!("decimal {d}"),
            other => other.kind().to_string(),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => |$v:ident| $make:expr),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from($v: $t) -> Self {
                $make
            }
        })*
    };
}

value_from! {
    i8 => |v| Value::Int(v.into()),
    i16 => |v| Value::Int(v.into()),
    i32 => |v| Value::Int(v.into()),
    i64 => |v| Value::Int(v),
    isize => |v| Value::Int(v as i64),
    u8 => |v| Value::Int(v.into()),
    u16 => |v| Value::Int(v.into()),
    u32 => |v| Value::Int(v.into()),
    u64 => |v| Value::Uint(v),
    usize => |v| Value::Uint(v as u64),
    f32 => |v| Value::Float(v.into()),
    f64 => |v| Value::Float(v),
    bool => |v| Value::Int(v.into()),
    &str => |v| Value::Text(v.to_string()),
    &String => |v| Value::Text(v.clone()),
    String => |v| Value::Text(v),
    &[u8] => |v| Value::Binary(v.to_vec()),
    Vec<u8> => |v| Value::Binary(v),
    serde_json::Value => |v| Value::Json(v.to_string()),
    &serde_json::Value => |v| Value::Json(v.to_string()),
}

impl<const N: usize> From<&[u8; N]> for Value {
    fn from(v: &[u8; N]) -> Self {
        Value::Binary(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Builds a parameter list for [`db::query`](crate::db::query) and friends from plain
/// Rust values, converting each with [`Value::from`].
///
/// ```
/// use wharf_sdk::db::Value;
/// let name = String::from("ada");
/// let params: &[Value] = wharf_sdk::params![7, &name, None::<i32>, true];
/// assert_eq!(params, [Value::Int(7), Value::Text("ada".into()), Value::Null, Value::Int(1)]);
/// ```
#[macro_export]
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::db::Value::from($value)),*]
    };
}

/// A Rust type a column value can be read as, with [`Row::get`].
///
/// Integers accept `Int`, `Uint` and whole `Decimal`s (MySQL's `SUM` is a decimal),
/// and fail rather than wrap when the value does not fit. `bool` accepts the integers
/// 0 and 1 (SQLite and MySQL store booleans as integers). `String` accepts text,
/// decimals, dates, times and JSON text (and bytes that are UTF-8); `Vec<u8>` bytes
/// and text; `f64` any number; `serde_json::Value` anything (see [`Value::to_json`]);
/// `Option<T>` is `None` for `NULL`.
///
/// ```
/// use wharf_sdk::db::{FromValue, Value};
///
/// struct Cents(i64);
///
/// impl FromValue for Cents {
///     fn from_value(value: &Value) -> Result<Self, String> {
///         i64::from_value(value).map(Cents)
///     }
/// }
///
/// assert_eq!(Cents::from_value(&Value::Int(250)).unwrap().0, 250);
/// assert_eq!(bool::from_value(&Value::Int(1)), Ok(true));
/// assert!(u8::from_value(&Value::Int(300)).is_err());
/// ```
pub trait FromValue: Sized {
    /// Converts `value`, or says why it cannot (the row adds the column's name).
    ///
    /// ```
    /// # use wharf_sdk::db::{FromValue, Value};
    /// assert_eq!(Option::<String>::from_value(&Value::Null), Ok(None));
    /// assert_eq!(
    ///     i64::from_value(&Value::Text("x".into())),
    ///     Err("expected i64, found text".to_string())
    /// );
    /// ```
    fn from_value(value: &Value) -> Result<Self, String>;
}

fn mismatch(expected: &str, found: &Value) -> String {
    format!("expected {expected}, found {}", found.describe())
}

/// The integer a decimal such as `12`, `-3.000` stands for, if it is whole.
fn whole_decimal(text: &str) -> Option<i128> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if !frac.bytes().all(|b| b == b'0') {
        return None;
    }
    int.parse().ok()
}

macro_rules! integer_from_value {
    ($($t:ty),*) => {
        $(impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, String> {
                let n: i128 = match value {
                    Value::Int(n) => (*n).into(),
                    Value::Uint(n) => (*n).into(),
                    Value::Decimal(d) => {
                        whole_decimal(d).ok_or_else(|| mismatch(stringify!($t), value))?
                    }
                    other => return Err(mismatch(stringify!($t), other)),
                };
                <$t>::try_from(n)
                    .map_err(|_| format!("{} is out of range for {}", value.describe(), stringify!($t)))
            }
        })*
    };
}

integer_from_value!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Float(f) => Ok(*f),
            Value::Int(n) => Ok(*n as f64),
            Value::Uint(n) => Ok(*n as f64),
            Value::Decimal(d) => d.parse().map_err(|_| mismatch("f64", value)),
            other => Err(mismatch("f64", other)),
        }
    }
}

impl FromValue for f32 {
    fn from_value(value: &Value) -> Result<Self, String> {
        f64::from_value(value)
            .map(|f| f as f32)
            .map_err(|_| mismatch("f32", value))
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(0) | Value::Uint(0) => Ok(false),
            Value::Int(1) | Value::Uint(1) => Ok(true),
            // MySQL's BIT(1).
            Value::Binary(b) if matches!(b[..], [0] | [1]) => Ok(b[0] == 1),
            other => Err(mismatch("bool (0 or 1)", other)),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s)
            | Value::Decimal(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Datetime(s)
            | Value::Json(s) => Ok(s.clone()),
            Value::Binary(b) => String::from_utf8(b.clone())
                .map_err(|_| "expected text, found bytes that are not UTF-8".to_string()),
            other => Err(mismatch("text", other)),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Binary(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.clone().into_bytes()),
            other => Err(mismatch("bytes", other)),
        }
    }
}

impl FromValue for serde_json::Value {
    fn from_value(value: &Value) -> Result<Self, String> {
        Ok(value.to_json())
    }
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, String> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Names a column in [`Row::get`] and [`Row::value`]: by name (`&str`, matched
/// exactly, else ignoring ASCII case) or by position (`usize`, from 0). Sealed: only
/// those two kinds exist.
///
/// ```
/// use wharf_sdk::db::{Rows, Value};
/// let rows = Rows::new(vec!["ID".into()], vec![vec![Value::Int(7)]]);
/// let row = rows.first().unwrap();
/// assert_eq!(row.get::<i64>("ID").unwrap(), 7);
/// assert_eq!(row.get::<i64>("id").unwrap(), 7);
/// assert_eq!(row.get::<i64>(0).unwrap(), 7);
/// ```
pub trait Column: sealed::Sealed {}

impl Column for &str {}
impl Column for &String {}
impl Column for usize {}

mod sealed {
    pub trait Sealed {
        /// The column's position among `columns`, if it is there.
        fn position(&self, columns: &[String]) -> Option<usize>;
        /// How an error names the column.
        fn label(&self, columns: &[String]) -> String;
    }

    impl Sealed for &str {
        fn position(&self, columns: &[String]) -> Option<usize> {
            columns
                .iter()
                .position(|c| c == self)
                .or_else(|| columns.iter().position(|c| c.eq_ignore_ascii_case(self)))
        }
        fn label(&self, _: &[String]) -> String {
            self.to_string()
        }
    }

    impl Sealed for &String {
        fn position(&self, columns: &[String]) -> Option<usize> {
            self.as_str().position(columns)
        }
        fn label(&self, _: &[String]) -> String {
            self.to_string()
        }
    }

    impl Sealed for usize {
        fn position(&self, columns: &[String]) -> Option<usize> {
            (*self < columns.len()).then_some(*self)
        }
        fn label(&self, columns: &[String]) -> String {
            columns
                .get(*self)
                .cloned()
                .unwrap_or_else(|| format!("#{self}"))
        }
    }
}

/// The rows a [`query`] returned, with their column names.
///
/// ```
/// use wharf_sdk::db::{Rows, Value};
/// let rows = Rows::new(
///     vec!["id".into(), "title".into()],
///     vec![vec![Value::Int(1), Value::Text("milk".into())]],
/// );
/// assert_eq!(rows.columns(), ["id", "title"]);
/// for row in &rows {
///     assert_eq!(row.get::<String>("title").unwrap(), "milk");
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    columns: Arc<[String]>,
    rows: Vec<Row>,
}

impl Rows {
    /// Rows from column names and values in that order; handy in tests.
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// let rows = Rows::new(vec!["n".into()], vec![vec![Value::Int(1)], vec![Value::Int(2)]]);
    /// assert_eq!(rows.len(), 2);
    /// ```
    pub fn new(columns: Vec<String>, rows: Vec<Vec<Value>>) -> Self {
        let columns: Arc<[String]> = columns.into();
        let rows = rows
            .into_iter()
            .map(|values| Row {
                columns: columns.clone(),
                values,
            })
            .collect();
        Self { columns, rows }
    }

    /// The column names, in order.
    ///
    /// ```
    /// # use wharf_sdk::db::Rows;
    /// assert_eq!(Rows::new(vec!["a".into(), "b".into()], vec![]).columns(), ["a", "b"]);
    /// ```
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// How many rows there are.
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// assert_eq!(Rows::new(vec!["n".into()], vec![vec![Value::Int(1)]]).len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    ///
    /// ```
    /// # use wharf_sdk::db::Rows;
    /// assert!(Rows::new(vec!["n".into()], vec![]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, in order.
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// let rows = Rows::new(vec!["n".into()], vec![vec![Value::Int(1)], vec![Value::Int(2)]]);
    /// let sum: i64 = rows.iter().map(|r| r.get::<i64>(0).unwrap()).sum();
    /// assert_eq!(sum, 3);
    /// ```
    pub fn iter(&self) -> std::slice::Iter<'_, Row> {
        self.rows.iter()
    }

    /// The first row, if any.
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// let rows = Rows::new(vec!["n".into()], vec![vec![Value::Int(5)]]);
    /// assert_eq!(rows.first().unwrap().get::<u32>("n").unwrap(), 5);
    /// ```
    pub fn first(&self) -> Option<&Row> {
        self.rows.first()
    }

    /// The first row, if any, consuming the rows.
    ///
    /// ```
    /// # use wharf_sdk::db::Rows;
    /// assert!(Rows::new(vec!["n".into()], vec![]).into_first().is_none());
    /// ```
    pub fn into_first(self) -> Option<Row> {
        self.rows.into_iter().next()
    }

    /// Every row read into `T` with [`Row::to_struct`]; the first row that does not
    /// fit is the error.
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// #[derive(serde::Deserialize)]
    /// struct Todo { id: u64, done: bool }
    ///
    /// let rows = Rows::new(
    ///     vec!["id".into(), "done".into()],
    ///     vec![vec![Value::Int(1), Value::Int(0)], vec![Value::Int(2), Value::Int(1)]],
    /// );
    /// let todos: Vec<Todo> = rows.to_structs().unwrap();
    /// assert_eq!((todos[1].id, todos[1].done), (2, true));
    /// ```
    pub fn to_structs<T: DeserializeOwned>(&self) -> Result<Vec<T>, Error> {
        self.rows.iter().map(Row::to_struct).collect()
    }
}

impl IntoIterator for Rows {
    type Item = Row;
    type IntoIter = std::vec::IntoIter<Row>;

    fn into_iter(self) -> Self::IntoIter {
        self.rows.into_iter()
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a Row;
    type IntoIter = std::slice::Iter<'a, Row>;

    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

/// One row of [`Rows`]: values you read by column name or position.
///
/// ```
/// use wharf_sdk::db::{Rows, Value};
/// let rows = Rows::new(
///     vec!["id".into(), "note".into()],
///     vec![vec![Value::Uint(9), Value::Null]],
/// );
/// let row = rows.first().unwrap();
/// assert_eq!(row.get::<u64>("id").unwrap(), 9);
/// assert_eq!(row.get::<Option<String>>("note").unwrap(), None);
/// ```
#[derive(Clone, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.columns.iter().zip(&self.values))
            .finish()
    }
}

impl Row {
    /// The value of column `col` (a name or a position) as a `T`. A missing column or
    /// a value that does not fit `T` is an [`Error::Decode`] naming the column.
    ///
    /// ```
    /// # use wharf_sdk::db::{Error, Rows, Value};
    /// let rows = Rows::new(vec!["n".into()], vec![vec![Value::Text("x".into())]]);
    /// let row = rows.first().unwrap();
    /// assert_eq!(row.get::<String>(0).unwrap(), "x");
    /// let Err(Error::Decode { column, message }) = row.get::<i64>("n") else { panic!() };
    /// assert_eq!((column.as_str(), message.as_str()), ("n", "expected i64, found text"));
    /// assert!(row.get::<i64>("missing").is_err());
    /// ```
    pub fn get<T: FromValue>(&self, col: impl Column) -> Result<T, Error> {
        let found = col.position(&self.columns).and_then(|i| self.values.get(i));
        let read = match found {
            Some(value) => T::from_value(value),
            None => Err(format!(
                "no such column; the columns are {}",
                self.columns.join(", ")
            )),
        };
        read.map_err(|message| Error::Decode {
            column: col.label(&self.columns),
            message,
        })
    }

    /// The raw value of column `col` (a name or a position), if there is one.
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// let rows = Rows::new(vec!["n".into()], vec![vec![Value::Float(1.5)]]);
    /// let row = rows.first().unwrap();
    /// assert_eq!(row.value("n"), Some(&Value::Float(1.5)));
    /// assert_eq!(row.value(1), None);
    /// ```
    pub fn value(&self, col: impl Column) -> Option<&Value> {
        self.values.get(col.position(&self.columns)?)
    }

    /// The values, in column order.
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// let rows = Rows::new(vec!["a".into(), "b".into()], vec![vec![Value::Int(1), Value::Null]]);
    /// assert_eq!(rows.first().unwrap().values(), [Value::Int(1), Value::Null]);
    /// ```
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The column names, in order (the same for every row of a result).
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// let rows = Rows::new(vec!["a".into()], vec![vec![Value::Int(1)]]);
    /// assert_eq!(rows.first().unwrap().columns(), ["a"]);
    /// ```
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The row as a JSON object from column name to [`Value::to_json`].
    ///
    /// ```
    /// # use wharf_sdk::db::{Rows, Value};
    /// let rows = Rows::new(vec!["id".into(), "d".into()], vec![vec![Value::Int(1), Value::Date("2024-05-01".into())]]);
    /// assert_eq!(rows.first().unwrap().to_json(), serde_json::json!({ "id": 1, "d": "2024-05-01" }));
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        let fields = self.columns.iter().zip(&self.values);
        serde_json::Value::Object(fields.map(|(c, v)| (c.clone(), v.to_json())).collect())
    }

    /// The row read into any deserializable `T`, by column name: struct fields (or map
    /// keys) are column names. Values map as in [`Value::to_json`], except that a
    /// `bool` field also takes the integers 0 and 1, an integer or float field a
    /// decimal, a text field UTF-8 bytes, and an enum field text naming a unit
    /// variant. A tuple takes the columns in order. A value that does not fit is an
    /// [`Error::Decode`] naming the column and what was expected and found; a field
    /// with no column is one too, unless it is an `Option` or has `#[serde(default)]`.
    ///
    /// ```
    /// # use wharf_sdk::db::{Error, Rows, Value};
    /// #[derive(serde::Deserialize, Debug, PartialEq)]
    /// struct Todo { id: u64, title: String, done: bool, tags: Vec<String>, due: Option<String> }
    ///
    /// let rows = Rows::new(
    ///     vec!["id".into(), "title".into(), "done".into(), "tags".into(), "due".into()],
    ///     vec![vec![
    ///         Value::Int(1),
    ///         Value::Text("milk".into()),
    ///         Value::Int(1),
    ///         Value::Json(r#"["shop"]"#.into()),
    ///         Value::Null,
    ///     ]],
    /// );
    /// let todo: Todo = rows.first().unwrap().to_struct().unwrap();
    /// assert_eq!(todo, Todo { id: 1, title: "milk".into(), done: true, tags: vec!["shop".into()], due: None });
    ///
    /// let bad = Rows::new(vec!["id".into()], vec![vec![Value::Text("one".into())]]);
    /// let Err(Error::Decode { column, message }) = bad.first().unwrap().to_struct::<(u64,)>() else { panic!() };
    /// assert_eq!(column, "id");
    /// assert_eq!(message, r#"expected u64, found string "one""#);
    /// ```
    pub fn to_struct<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(de::RowDeserializer(self)).map_err(|e| Error::Decode {
            column: e.column.unwrap_or_default(),
            message: e.message,
        })
    }
}

/// What an [`execute`] did.
///
/// ```no_run
/// use wharf_sdk::db;
/// let done = db::execute("INSERT INTO notes (body) VALUES (?)", &["hi".into()])?;
/// println!("note {:?}, {} row(s)", done.last_insert_id, done.rows_affected);
/// # Ok::<(), db::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecResult {
    /// How many rows the statement changed. (MySQL does not count a row an UPDATE
    /// matched but left as it was.)
    pub rows_affected: u64,
    /// The id an INSERT generated for an auto-increment column, if any.
    pub last_insert_id: Option<u64>,
}

/// Which SQL dialect the database speaks.
///
/// ```no_run
/// use wharf_sdk::db::{self, Dialect};
/// let now = match db::dialect() {
///     Dialect::Mysql => "SELECT NOW()",
///     Dialect::Sqlite => "SELECT datetime('now')",
/// };
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite.
    Sqlite,
}

/// A failed database call.
///
/// As a response ([`IntoResponse`]) it is a small JSON body `{"error": "..."}`:
/// `Unavailable` answers 503 with `Retry-After: 1`, `Timeout` 504,
/// `ConstraintViolation` 409, anything else 500. The body never carries the
/// database's own message; that goes to stderr, which wharf logs with the request id.
///
/// ```
/// use wharf_sdk::IntoResponse;
/// use wharf_sdk::db::Error;
/// let res = Error::Unavailable("primary down".into()).into_response();
/// assert_eq!((res.status(), res.header("retry-after")), (503, Some("1")));
/// assert_eq!(Error::BadStatement("no such table".into()).into_response().status(), 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The statement is wrong: syntax, unknown table or column, parameter count or
    /// type, or a write sent through [`query`]. Fix the app.
    BadStatement(String),
    /// The data broke a rule of the schema: unique key, foreign key, NOT NULL, CHECK.
    ConstraintViolation(String),
    /// No database node could take the statement right now. Try again later.
    Unavailable(String),
    /// The statement ran out of time.
    Timeout(String),
    /// The app may not do this: no database granted, or a statement kind wharf never
    /// runs for guests (`LOAD DATA`, `SET`, `USE`, `LOCK`, transaction control...).
    NotAllowed(String),
    /// A value could not be read as the type asked for.
    Decode {
        /// The column's name (or `#N` for a position past the last column).
        column: String,
        /// What was expected and what was found.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadStatement(m) => write!(f, "bad SQL statement: {m}"),
            Error::ConstraintViolation(m) => write!(f, "constraint violation: {m}"),
            Error::Unavailable(m) => write!(f, "database unavailable: {m}"),
            Error::Timeout(m) => write!(f, "database timeout: {m}"),
            Error::NotAllowed(m) => write!(f, "statement not allowed: {m}"),
            Error::Decode { column, message } if column.is_empty() => {
                write!(f, "cannot decode row: {message}")
            }
            Error::Decode { column, message } => {
                write!(f, "cannot decode column `{column}`: {message}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, public) = match self {
            Error::Unavailable(_) => (503, "the database is unavailable; try again shortly"),
            Error::Timeout(_) => (504, "the database took too long to answer"),
            Error::ConstraintViolation(_) => (409, "the change conflicts with existing data"),
            _ => (500, "internal error"),
        };
        // The database's own message may reveal the schema: it goes to the log, not
        // to the client.
        eprintln!("database error (answered {status}): {self}");
        let res = Response::json(&serde_json::json!({ "error": public })).with_status(status);
        if status == 503 {
            res.with_header("retry-after", "1")
        } else {
            res
        }
    }
}

/// Lets `?` turn a database error into a response in handlers returning
/// `Result<Response, Response>`.
impl From<Error> for Response {
    fn from(e: Error) -> Self {
        e.into_response()
    }
}

fn lift_error(e: sql::Error) -> Error {
    match e {
        sql::Error::BadStatement(m) => Error::BadStatement(m),
        sql::Error::ConstraintViolation(m) => Error::ConstraintViolation(m),
        sql::Error::Unavailable(m) => Error::Unavailable(m),
        sql::Error::Timeout(m) => Error::Timeout(m),
        sql::Error::NotAllowed(m) => Error::NotAllowed(m),
    }
}

fn lift_rows(rows: sql::Rows) -> Rows {
    Rows::new(rows.columns, rows.rows)
}

fn lift_exec(res: sql::ExecResult) -> ExecResult {
    ExecResult {
        rows_affected: res.rows_affected,
        last_insert_id: res.last_insert_id,
    }
}

/// Runs a read (`SELECT`, `WITH`, `SHOW`, `EXPLAIN`...) with `params` bound to its
/// `?`s. A replica may answer it, unless this request has already written: then the
/// primary does, so a request always reads its own writes. A write sent here is an
/// [`Error::BadStatement`]: use [`execute`].
///
/// ```no_run
/// use wharf_sdk::db;
/// let rows = db::query("SELECT id, title FROM todos WHERE done = ?", &[false.into()])?;
/// for row in &rows {
///     println!("{}: {}", row.get::<u64>("id")?, row.get::<String>("title")?);
/// }
/// # Ok::<(), db::Error>(())
/// ```
pub fn query(statement: &str, params: &[Value]) -> Result<Rows, Error> {
    sql::query(statement, params)
        .map(lift_rows)
        .map_err(lift_error)
}

/// Runs a write (`INSERT`, `UPDATE`, `DELETE`, `REPLACE`, or DDL) on the primary, with
/// `params` bound to its `?`s. wharf never retries it.
///
/// ```no_run
/// use wharf_sdk::db;
/// let done = db::execute("DELETE FROM todos WHERE id = ?", &[7.into()])?;
/// assert!(done.rows_affected <= 1);
/// # Ok::<(), db::Error>(())
/// ```
pub fn execute(statement: &str, params: &[Value]) -> Result<ExecResult, Error> {
    sql::execute(statement, params)
        .map(lift_exec)
        .map_err(lift_error)
}

/// Starts a transaction on the primary.
///
/// ```no_run
/// use wharf_sdk::db;
/// let tx = db::transaction()?;
/// tx.execute("UPDATE accounts SET cents = cents - ? WHERE id = ?", wharf_sdk::params![500, 1])?;
/// tx.execute("UPDATE accounts SET cents = cents + ? WHERE id = ?", wharf_sdk::params![500, 2])?;
/// tx.commit()?;
/// # Ok::<(), db::Error>(())
/// ```
pub fn transaction() -> Result<Transaction, Error> {
    sql::begin()
        .map(|inner| Transaction { inner })
        .map_err(lift_error)
}

/// The dialect of the app's database, for the rare statement that must differ.
///
/// ```no_run
/// use wharf_sdk::db::{self, Dialect};
/// let autoincrement = match db::dialect() {
///     Dialect::Mysql => "AUTO_INCREMENT",
///     Dialect::Sqlite => "AUTOINCREMENT",
/// };
/// ```
pub fn dialect() -> Dialect {
    match sql::get_dialect() {
        sql::Dialect::Mysql => Dialect::Mysql,
        sql::Dialect::Sqlite => Dialect::Sqlite,
    }
}

/// A transaction on the primary, from [`transaction`]. Its statements see each other's
/// writes; [`commit`](Transaction::commit) makes them permanent. Dropped without a
/// commit (an early `?` return, say), it rolls back.
///
/// ```no_run
/// use wharf_sdk::db;
/// let tx = db::transaction()?;
/// let rows = tx.query("SELECT stock FROM items WHERE id = ? FOR UPDATE", &[3.into()])?;
/// let stock: i64 = rows.first().map_or(Ok(0), |r| r.get("stock"))?;
/// if stock > 0 {
///     tx.execute("UPDATE items SET stock = stock - 1 WHERE id = ?", &[3.into()])?;
///     tx.commit()?;
/// } else {
///     tx.rollback()?;
/// }
/// # Ok::<(), db::Error>(())
/// ```
pub struct Transaction {
    inner: sql::Transaction,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

impl Transaction {
    /// A read inside the transaction, like [`query`].
    ///
    /// ```no_run
    /// # use wharf_sdk::db;
    /// let tx = db::transaction()?;
    /// let n: i64 = tx.query("SELECT COUNT(*) FROM todos", &[])?.first().unwrap().get(0)?;
    /// # Ok::<(), db::Error>(())
    /// ```
    pub fn query(&self, statement: &str, params: &[Value]) -> Result<Rows, Error> {
        self.inner
            .query(statement, params)
            .map(lift_rows)
            .map_err(lift_error)
    }

    /// A write inside the transaction, like [`execute`].
    ///
    /// ```no_run
    /// # use wharf_sdk::db;
    /// let tx = db::transaction()?;
    /// tx.execute("INSERT INTO log (line) VALUES (?)", &["hi".into()])?;
    /// tx.commit()?;
    /// # Ok::<(), db::Error>(())
    /// ```
    pub fn execute(&self, statement: &str, params: &[Value]) -> Result<ExecResult, Error> {
        self.inner
            .execute(statement, params)
            .map(lift_exec)
            .map_err(lift_error)
    }

    /// Makes the transaction's writes permanent.
    ///
    /// ```no_run
    /// # use wharf_sdk::db;
    /// let tx = db::transaction()?;
    /// tx.execute("DELETE FROM sessions", &[])?;
    /// tx.commit()?;
    /// # Ok::<(), db::Error>(())
    /// ```
    pub fn commit(self) -> Result<(), Error> {
        sql::Transaction::commit(self.inner).map_err(lift_error)
    }

    /// Undoes the transaction's writes.
    ///
    /// ```no_run
    /// # use wharf_sdk::db;
    /// let tx = db::transaction()?;
    /// tx.execute("DELETE FROM sessions", &[])?;
    /// tx.rollback()?;
    /// # Ok::<(), db::Error>(())
    /// ```
    pub fn rollback(self) -> Result<(), Error> {
        sql::Transaction::rollback(self.inner).map_err(lift_error)
    }
}
