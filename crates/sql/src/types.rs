//! SQL types and values.
//!
//! A [`Type`] is what a column or expression is declared as; a [`Datum`] is one value. Several
//! types share a datum representation (INT2, INT4 and INT8 are all [`Datum::Int`]; the string
//! types are all [`Datum::String`]) and the type decides widths, limits and the Postgres OID.
//!
//! Text forms follow PostgreSQL's output functions (`t`/`f`, `\x` hex for bytes, ISO dates,
//! `1 year 2 mons 3 days 04:05:06` intervals), because psql and drivers parse them.
//!
//! Comparison ([`Datum::compare`]) is SQL comparison: NULL is handled by the caller (it makes
//! the result unknown), numbers of different kinds compare by value, and values of unrelated
//! types do not compare (the binder rejects such expressions before they run).

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A SQL type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Type {
    /// BOOL.
    Bool,
    /// INT2 / SMALLINT.
    Int2,
    /// INT4 / INTEGER.
    Int4,
    /// INT8 / BIGINT / INT.
    Int8,
    /// FLOAT4 / REAL.
    Float4,
    /// FLOAT8 / DOUBLE PRECISION / FLOAT.
    Float8,
    /// DECIMAL / NUMERIC, with optional precision and scale.
    Decimal {
        /// Total significant digits allowed.
        precision: Option<u32>,
        /// Digits after the decimal point (values are rounded to it).
        scale: Option<u32>,
    },
    /// VARCHAR(n) / TEXT / STRING (no limit) or CHAR(n) (blank-padded).
    String {
        /// The longest value allowed, in characters.
        max_len: Option<u32>,
        /// CHAR(n): values are padded with blanks to `max_len`.
        fixed: bool,
    },
    /// BYTEA.
    Bytes,
    /// DATE.
    Date,
    /// TIMESTAMP (without time zone).
    Timestamp,
    /// TIMESTAMPTZ (stored in UTC, shown in the session's zone, which is UTC).
    TimestampTz,
    /// INTERVAL.
    Interval,
    /// UUID.
    Uuid,
    /// JSONB.
    Jsonb,
    /// The type of a bare NULL or an untyped parameter, until context decides.
    Unknown,
}

impl Type {
    /// TEXT.
    pub const TEXT: Type = Type::String {
        max_len: None,
        fixed: false,
    };

    /// The canonical name, as `SHOW COLUMNS` and error messages print it.
    pub fn name(&self) -> String {
        match self {
            Type::Bool => "BOOL".into(),
            Type::Int2 => "INT2".into(),
            Type::Int4 => "INT4".into(),
            Type::Int8 => "INT8".into(),
            Type::Float4 => "FLOAT4".into(),
            Type::Float8 => "FLOAT8".into(),
            Type::Decimal {
                precision: Some(p),
                scale,
            } => format!("DECIMAL({p},{})", scale.unwrap_or(0)),
            Type::Decimal { .. } => "DECIMAL".into(),
            Type::String {
                max_len: Some(n),
                fixed: true,
            } => format!("CHAR({n})"),
            Type::String { fixed: true, .. } => "CHAR".into(),
            Type::String {
                max_len: Some(n), ..
            } => format!("VARCHAR({n})"),
            Type::String { .. } => "STRING".into(),
            Type::Bytes => "BYTES".into(),
            Type::Date => "DATE".into(),
            Type::Timestamp => "TIMESTAMP".into(),
            Type::TimestampTz => "TIMESTAMPTZ".into(),
            Type::Interval => "INTERVAL".into(),
            Type::Uuid => "UUID".into(),
            Type::Jsonb => "JSONB".into(),
            Type::Unknown => "UNKNOWN".into(),
        }
    }

    /// The name Postgres catalogs use (`information_schema.columns.data_type`).
    pub fn pg_name(&self) -> &'static str {
        match self {
            Type::Bool => "boolean",
            Type::Int2 => "smallint",
            Type::Int4 => "integer",
            Type::Int8 => "bigint",
            Type::Float4 => "real",
            Type::Float8 => "double precision",
            Type::Decimal { .. } => "numeric",
            Type::String { fixed: true, .. } => "character",
            Type::String {
                max_len: Some(_), ..
            } => "character varying",
            Type::String { .. } => "text",
            Type::Bytes => "bytea",
            Type::Date => "date",
            Type::Timestamp => "timestamp without time zone",
            Type::TimestampTz => "timestamp with time zone",
            Type::Interval => "interval",
            Type::Uuid => "uuid",
            Type::Jsonb => "jsonb",
            Type::Unknown => "unknown",
        }
    }

    /// The Postgres type OID clients see.
    pub fn oid(&self) -> u32 {
        match self {
            Type::Bool => 16,
            Type::Bytes => 17,
            Type::Int8 => 20,
            Type::Int2 => 21,
            Type::Int4 => 23,
            Type::String { fixed: true, .. } => 1042,
            Type::String {
                max_len: Some(_), ..
            } => 1043,
            Type::String { .. } => 25,
            Type::Float4 => 700,
            Type::Float8 => 701,
            Type::Date => 1082,
            Type::Timestamp => 1114,
            Type::TimestampTz => 1184,
            Type::Interval => 1186,
            Type::Decimal { .. } => 1700,
            Type::Uuid => 2950,
            Type::Jsonb => 3802,
            Type::Unknown => 705,
        }
    }

    /// The type with this Postgres OID, if bini has it.
    pub fn from_oid(oid: u32) -> Option<Type> {
        Some(match oid {
            16 => Type::Bool,
            17 => Type::Bytes,
            20 => Type::Int8,
            21 => Type::Int2,
            23 => Type::Int4,
            25 | 19 => Type::TEXT,
            1042 => Type::String {
                max_len: None,
                fixed: true,
            },
            1043 => Type::String {
                max_len: None,
                fixed: false,
            },
            700 => Type::Float4,
            701 => Type::Float8,
            1082 => Type::Date,
            1114 => Type::Timestamp,
            1184 => Type::TimestampTz,
            1186 => Type::Interval,
            1700 => Type::Decimal {
                precision: None,
                scale: None,
            },
            2950 => Type::Uuid,
            3802 | 114 => Type::Jsonb,
            _ => return None,
        })
    }

    /// Whether this is one of the integer types.
    pub fn is_int(&self) -> bool {
        matches!(self, Type::Int2 | Type::Int4 | Type::Int8)
    }

    /// Whether this is a number type.
    pub fn is_numeric(&self) -> bool {
        self.is_int() || matches!(self, Type::Float4 | Type::Float8 | Type::Decimal { .. })
    }

    /// Whether this is a string type.
    pub fn is_string(&self) -> bool {
        matches!(self, Type::String { .. })
    }

    /// Whether values of this type can be part of an index or primary key.
    pub fn is_indexable(&self) -> bool {
        !matches!(self, Type::Jsonb | Type::Unknown)
    }

    /// Whether `self` and `other` share a value domain (they compare and mix in expressions).
    pub fn family(&self) -> u8 {
        match self {
            Type::Bool => 1,
            Type::Int2 | Type::Int4 | Type::Int8 | Type::Float4 | Type::Float8 => 2,
            Type::Decimal { .. } => 2,
            Type::String { .. } => 3,
            Type::Bytes => 4,
            Type::Date | Type::Timestamp | Type::TimestampTz => 5,
            Type::Interval => 6,
            Type::Uuid => 7,
            Type::Jsonb => 8,
            Type::Unknown => 0,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// An interval: months, days and microseconds kept apart, as Postgres does (a month is not a
/// fixed number of days). For comparison and ordering, a month counts 30 days and a day 24 h.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interval {
    /// Months.
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Microseconds.
    pub micros: i64,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Interval {
    /// The interval as microseconds, with 30-day months (for ordering).
    pub fn total_micros(&self) -> i128 {
        (self.months as i128 * 30 + self.days as i128) * MICROS_PER_DAY as i128
            + self.micros as i128
    }
}

impl fmt::Display for Interval {
    /// Postgres's `postgres` interval style: `1 year 2 mons 3 days 04:05:06.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let (years, months) = (self.months / 12, self.months % 12);
        let plural = |n: i64, one: &str, many: &str| {
            format!("{n} {}", if n == 1 || n == -1 { one } else { many })
        };
        if years != 0 {
            parts.push(plural(years as i64, "year", "years"));
        }
        if months != 0 {
            parts.push(plural(months as i64, "mon", "mons"));
        }
        if self.days != 0 {
            parts.push(plural(self.days as i64, "day", "days"));
        }
        if self.micros != 0 || parts.is_empty() {
            let neg = self.micros < 0;
            let m = self.micros.unsigned_abs();
            let (secs, frac) = (m / 1_000_000, m % 1_000_000);
            let mut t = format!(
                "{}{:02}:{:02}:{:02}",
                if neg { "-" } else { "" },
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            if frac != 0 {
                let s = format!("{frac:06}");
                t.push('.');
                t.push_str(s.trim_end_matches('0'));
            }
            parts.push(t);
        }
        f.write_str(&parts.join(" "))
    }
}

/// One SQL value.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    /// NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer type.
    Int(i64),
    /// Either float type.
    Float(f64),
    /// DECIMAL.
    Decimal(Decimal),
    /// Any string type.
    String(String),
    /// BYTEA.
    Bytes(Vec<u8>),
    /// DATE.
    Date(NaiveDate),
    /// TIMESTAMP.
    Timestamp(NaiveDateTime),
    /// TIMESTAMPTZ.
    TimestampTz(DateTime<Utc>),
    /// INTERVAL.
    Interval(Interval),
    /// UUID.
    Uuid(uuid::Uuid),
    /// JSONB.
    Json(serde_json::Value),
}

impl Datum {
    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// The type a value has on its own (literals, results without a declared type).
    pub fn natural_type(&self) -> Type {
        match self {
            Datum::Null => Type::Unknown,
            Datum::Bool(_) => Type::Bool,
            Datum::Int(_) => Type::Int8,
            Datum::Float(_) => Type::Float8,
            Datum::Decimal(_) => Type::Decimal {
                precision: None,
                scale: None,
            },
            Datum::String(_) => Type::TEXT,
            Datum::Bytes(_) => Type::Bytes,
            Datum::Date(_) => Type::Date,
            Datum::Timestamp(_) => Type::Timestamp,
            Datum::TimestampTz(_) => Type::TimestampTz,
            Datum::Interval(_) => Type::Interval,
            Datum::Uuid(_) => Type::Uuid,
            Datum::Json(_) => Type::Jsonb,
        }
    }

    /// SQL comparison of two non-NULL values; `None` when they do not compare.
    pub fn compare(&self, other: &Datum) -> Option<Ordering> {
        use Datum::*;
        Some(match (self, other) {
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => cmp_f64(*a, *b),
            (Int(a), Float(b)) => cmp_f64(*a as f64, *b),
            (Float(a), Int(b)) => cmp_f64(*a, *b as f64),
            (Decimal(a), Decimal(b)) => a.cmp(b),
            (Int(a), Decimal(b)) => rust_decimal::Decimal::from(*a).cmp(b),
            (Decimal(a), Int(b)) => a.cmp(&rust_decimal::Decimal::from(*b)),
            (Float(a), Decimal(b)) => cmp_f64(*a, dec_to_f64(b)),
            (Decimal(a), Float(b)) => cmp_f64(dec_to_f64(a), *b),
            (String(a), String(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (Date(a), Date(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (TimestampTz(a), TimestampTz(b)) => a.cmp(b),
            (Date(a), Timestamp(b)) => date_ts(a).cmp(b),
            (Timestamp(a), Date(b)) => a.cmp(&date_ts(b)),
            (TimestampTz(a), Timestamp(b)) => a.naive_utc().cmp(b),
            (Timestamp(a), TimestampTz(b)) => a.cmp(&b.naive_utc()),
            (Date(a), TimestampTz(b)) => date_ts(a).cmp(&b.naive_utc()),
            (TimestampTz(a), Date(b)) => a.naive_utc().cmp(&date_ts(b)),
            (Interval(a), Interval(b)) => a.total_micros().cmp(&b.total_micros()),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            (Json(a), Json(b)) => json_cmp(a, b),
            _ => return None,
        })
    }

    /// A total order for sorting: NULLs first, then by [`Datum::compare`] (values that do not
    /// compare, which the binder prevents, fall back to their type's rank).
    pub fn sort_cmp(&self, other: &Datum) -> Ordering {
        match (self.is_null(), other.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => self.compare(other).unwrap_or_else(|| {
                self.natural_type()
                    .family()
                    .cmp(&other.natural_type().family())
            }),
        }
    }

    /// The value's truth, for WHERE and boolean operators (`None` for NULL).
    pub fn truth(&self) -> Result<Option<bool>> {
        match self {
            Datum::Null => Ok(None),
            Datum::Bool(b) => Ok(Some(*b)),
            other => Err(Error::DatatypeMismatch(format!(
                "expected a boolean, got {}",
                other.natural_type()
            ))),
        }
    }

    /// The value as Postgres's text output function prints it (`None` for NULL).
    pub fn to_pg_text(&self) -> Option<String> {
        Some(match self {
            Datum::Null => return None,
            Datum::Bool(b) => if *b { "t" } else { "f" }.to_string(),
            Datum::Int(i) => i.to_string(),
            Datum::Float(f) => format_float(*f),
            Datum::Decimal(d) => d.to_string(),
            Datum::String(s) => s.clone(),
            Datum::Bytes(b) => {
                let mut s = String::with_capacity(2 + b.len() * 2);
                s.push_str("\\x");
                for byte in b {
                    s.push_str(&format!("{byte:02x}"));
                }
                s
            }
            Datum::Date(d) => d.format("%Y-%m-%d").to_string(),
            Datum::Timestamp(t) => format_timestamp(t),
            Datum::TimestampTz(t) => format!("{}+00", format_timestamp(&t.naive_utc())),
            Datum::Interval(i) => i.to_string(),
            Datum::Uuid(u) => u.hyphenated().to_string(),
            Datum::Json(j) => format_json(j),
        })
    }
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_pg_text() {
            Some(s) => f.write_str(&s),
            None => f.write_str("NULL"),
        }
    }
}

fn date_ts(d: &NaiveDate) -> NaiveDateTime {
    d.and_hms_opt(0, 0, 0).expect("midnight exists")
}

/// Floats order with NaN above every number, as in Postgres.
pub(crate) fn cmp_f64(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).expect("not NaN"),
    }
}

pub(crate) fn dec_to_f64(d: &Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    d.to_f64().unwrap_or(f64::NAN)
}

fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if f != 0.0 && (f.abs() >= 1e15 || f.abs() < 1e-4) {
        // Postgres switches to exponent form for very large and very small magnitudes.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        format!("{f}")
    }
}

fn format_timestamp(t: &NaiveDateTime) -> String {
    let micros = t.and_utc().timestamp_subsec_micros();
    if micros == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        let frac = format!("{micros:06}");
        format!(
            "{}.{}",
            t.format("%Y-%m-%d %H:%M:%S"),
            frac.trim_end_matches('0')
        )
    }
}

/// JSONB's text form: object keys ordered as jsonb stores them (shorter keys first, then
/// bytewise), `", "` and `": "` separators.
pub fn format_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_json(&map[k], out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// jsonb ordering (Postgres's): object > array > boolean > number > string > null, then by
/// content.
fn json_cmp(a: &serde_json::Value, b: &serde_json::Value) -> Ordering {
    use serde_json::Value;
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::String(_) => 1,
            Value::Number(_) => 2,
            Value::Bool(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => cmp_f64(
            x.as_f64().unwrap_or(f64::NAN),
            y.as_f64().unwrap_or(f64::NAN),
        ),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x.len().cmp(&y.len()).then_with(|| {
            x.iter()
                .zip(y)
                .map(|(p, q)| json_cmp(p, q))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        (Value::Object(_), Value::Object(_)) => format_json(a).cmp(&format_json(b)),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_match_postgres() {
        assert_eq!(Datum::Bool(true).to_pg_text().as_deref(), Some("t"));
        assert_eq!(Datum::Float(1e20).to_pg_text().as_deref(), Some("1e+20"));
        assert_eq!(Datum::Float(0.5).to_pg_text().as_deref(), Some("0.5"));
        assert_eq!(
            Datum::Bytes(vec![0xde, 0xad]).to_pg_text().as_deref(),
            Some("\\xdead")
        );
        let i = Interval {
            months: 14,
            days: 3,
            micros: 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000,
        };
        assert_eq!(i.to_string(), "1 year 2 mons 3 days 04:05:06.5");
        assert_eq!(Interval::default().to_string(), "00:00:00");
        let j: serde_json::Value =
            serde_json::from_str(r#"{"bb": 1, "a": [true, null]}"#).expect("json");
        assert_eq!(format_json(&j), r#"{"a": [true, null], "bb": 1}"#);
    }

    #[test]
    fn numbers_compare_across_kinds() {
        let d = Datum::Decimal(Decimal::new(15, 1));
        assert_eq!(Datum::Int(1).compare(&d), Some(Ordering::Less));
        assert_eq!(Datum::Float(2.0).compare(&d), Some(Ordering::Greater));
        assert_eq!(Datum::Int(1).compare(&Datum::String("1".into())), None);
    }
}
