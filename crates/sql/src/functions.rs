//! Built-in scalar functions, and date/time parsing and arithmetic.
//!
//! Functions are resolved by name when binding ([`Func::lookup`]) and called with evaluated
//! arguments ([`call`]). NULL in, NULL out, except where SQL says otherwise (`coalesce`,
//! `concat`). `now()` is the statement's transaction timestamp, fixed when binding, so every
//! row of a statement sees one value.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::error::{Error, Result};
use crate::expr::BinOp;
use crate::types::{dec_to_f64, Datum, Interval, Type};

/// A scalar function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// `lower(s)`
    Lower,
    /// `upper(s)`
    Upper,
    /// `length(s)` / `char_length`
    Length,
    /// `substr(s, from [, len])` / `substring`
    Substr,
    /// `trim(s)` / `btrim`
    Trim,
    /// `ltrim(s)`
    Ltrim,
    /// `rtrim(s)`
    Rtrim,
    /// `replace(s, from, to)`
    Replace,
    /// `concat(a, …)` (NULLs skipped)
    Concat,
    /// `position(sub in s)` / `strpos(s, sub)` (argument order: haystack, needle)
    Strpos,
    /// `left(s, n)`
    Left,
    /// `right(s, n)`
    Right,
    /// `repeat(s, n)`
    Repeat,
    /// `reverse(s)`
    Reverse,
    /// `split_part(s, delim, n)`
    SplitPart,
    /// `lpad(s, n [, fill])`
    Lpad,
    /// `rpad(s, n [, fill])`
    Rpad,
    /// `abs(x)`
    Abs,
    /// `round(x [, digits])`
    Round,
    /// `trunc(x)`
    Trunc,
    /// `ceil(x)`
    Ceil,
    /// `floor(x)`
    Floor,
    /// `sqrt(x)`
    Sqrt,
    /// `power(x, y)`
    Power,
    /// `mod(x, y)`
    Mod,
    /// `sign(x)`
    Sign,
    /// `random()`
    Random,
    /// `coalesce(a, …)`
    Coalesce,
    /// `nullif(a, b)`
    Nullif,
    /// `greatest(a, …)`
    Greatest,
    /// `least(a, …)`
    Least,
    /// `gen_random_uuid()`
    GenRandomUuid,
    /// `extract(field from t)` / `date_part(field, t)`
    DatePart,
    /// `date_trunc(field, t)`
    DateTrunc,
    /// `age(a, b)`: the interval between two timestamps
    Age,
    /// `to_char` is not here; `jsonb_typeof(j)`
    JsonbTypeof,
    /// `md5(s)` is not built in; `version()`
    Version,
    /// `current_database()`; resolved by the binder, never called
    CurrentDatabase,
    /// `text ~ pattern` (POSIX regular expression match)
    RegexMatch,
    /// `text ~* pattern` (case-insensitive)
    RegexIMatch,
    /// `pg_get_userbyid(oid)`: the role's name
    PgGetUserById,
    /// `pg_encoding_to_char(int)`: an encoding's name
    PgEncodingToChar,
    /// `pg_table_is_visible(oid)`: whether the search path reaches the relation
    PgTableIsVisible,
    /// `array_to_string(array, sep)` over an array's text form (bini has no array type yet;
    /// `ARRAY(SELECT …)` and catalog columns give arrays as Postgres array literals)
    ArrayToString,
    /// `array_upper(array, 1)`: the number of elements (NULL when empty)
    ArrayUpper,
    /// `array[i]` (1-based)
    ArrayElement,
    /// `x = ANY(array)`
    ArrayContains,
    /// `format_type(type oid, typmod)`: the type's SQL name, `character varying(100)`
    FormatType,
    /// `pg_get_expr(expr, relation[, pretty])`: catalogs keep expressions as SQL text
    PgGetExpr,
    /// `pg_relation_is_publishable(relation)`: bini has no logical replication
    PgRelationIsPublishable,
    /// `pg_get_statisticsobjdef_columns(oid)`: bini has no extended statistics
    PgGetStatisticsObjDefColumns,
}

/// The oid of the one role, `root` (Postgres's bootstrap superuser has oid 10).
pub const ROOT_OID: i64 = 10;

impl Func {
    /// The function called `name` (lower-case), if there is one.
    pub fn lookup(name: &str) -> Option<Func> {
        use Func::*;
        Some(match name {
            "lower" => Lower,
            "upper" => Upper,
            "length" | "char_length" | "character_length" => Length,
            "substr" | "substring" => Substr,
            "trim" | "btrim" => Trim,
            "ltrim" => Ltrim,
            "rtrim" => Rtrim,
            "replace" => Replace,
            "concat" => Concat,
            "strpos" => Strpos,
            "left" => Left,
            "right" => Right,
            "repeat" => Repeat,
            "reverse" => Reverse,
            "split_part" => SplitPart,
            "lpad" => Lpad,
            "rpad" => Rpad,
            "abs" => Abs,
            "round" => Round,
            "trunc" => Trunc,
            "ceil" | "ceiling" => Ceil,
            "floor" => Floor,
            "sqrt" => Sqrt,
            "power" | "pow" => Power,
            "mod" => Mod,
            "sign" => Sign,
            "random" => Random,
            "coalesce" | "ifnull" => Coalesce,
            "nullif" => Nullif,
            "greatest" => Greatest,
            "least" => Least,
            "gen_random_uuid" | "uuid_generate_v4" => GenRandomUuid,
            "date_part" | "extract" => DatePart,
            "date_trunc" => DateTrunc,
            "age" => Age,
            "jsonb_typeof" | "json_typeof" => JsonbTypeof,
            "version" => Version,
            "pg_get_userbyid" => PgGetUserById,
            "pg_encoding_to_char" => PgEncodingToChar,
            "pg_table_is_visible" => PgTableIsVisible,
            "array_to_string" => ArrayToString,
            "array_upper" => ArrayUpper,
            "format_type" => FormatType,
            "pg_get_expr" => PgGetExpr,
            "pg_relation_is_publishable" => PgRelationIsPublishable,
            "pg_get_statisticsobjdef_columns" => PgGetStatisticsObjDefColumns,
            "current_database" => CurrentDatabase,
            _ => return None,
        })
    }

    /// How many arguments the function takes: at least, at most (`None`: any number).
    pub fn arity(self) -> (usize, Option<usize>) {
        use Func::*;
        match self {
            Random | GenRandomUuid | Version | CurrentDatabase => (0, Some(0)),
            PgGetUserById
            | PgEncodingToChar
            | PgTableIsVisible
            | PgRelationIsPublishable
            | PgGetStatisticsObjDefColumns => (1, Some(1)),
            ArrayUpper | ArrayElement | ArrayContains | FormatType => (2, Some(2)),
            PgGetExpr => (2, Some(3)),
            RegexMatch | RegexIMatch | ArrayToString => (2, Some(2)),
            Lower | Upper | Length | Trim | Ltrim | Rtrim | Reverse | Abs | Ceil | Floor | Sqrt
            | Sign | Trunc | JsonbTypeof => (1, Some(1)),
            Round => (1, Some(2)),
            Substr | Lpad | Rpad => (2, Some(3)),
            Strpos | Left | Right | Repeat | Power | Mod | Nullif | DatePart | DateTrunc | Age => {
                (2, Some(2))
            }
            Replace | SplitPart => (3, Some(3)),
            Concat => (0, None),
            Coalesce | Greatest | Least => (1, None),
        }
    }

    /// Fails unless the function takes `n` arguments.
    pub fn check_arity(self, n: usize) -> Result<()> {
        let (min, max) = self.arity();
        if n < min || max.is_some_and(|m| n > m) {
            return Err(Error::UndefinedFunction(format!(
                "{}() with {n} argument{}",
                format!("{self:?}").to_lowercase(),
                if n == 1 { "" } else { "s" }
            )));
        }
        Ok(())
    }

    /// Whether two calls with the same arguments may differ.
    pub fn is_volatile(self) -> bool {
        matches!(self, Func::Random | Func::GenRandomUuid)
    }

    /// The result type for arguments of these types.
    pub fn return_type(self, args: &[Type]) -> Type {
        use Func::*;
        let first = args.first().cloned().unwrap_or(Type::Unknown);
        match self {
            Lower
            | Upper
            | Substr
            | Trim
            | Ltrim
            | Rtrim
            | Replace
            | Concat
            | Left
            | Right
            | Repeat
            | Reverse
            | SplitPart
            | Lpad
            | Rpad
            | Version
            | CurrentDatabase
            | JsonbTypeof
            | PgGetUserById
            | PgEncodingToChar
            | ArrayToString
            | ArrayElement
            | FormatType
            | PgGetExpr
            | PgGetStatisticsObjDefColumns => Type::TEXT,
            RegexMatch
            | RegexIMatch
            | PgTableIsVisible
            | ArrayContains
            | PgRelationIsPublishable => Type::Bool,
            ArrayUpper => Type::Int4,
            Length | Strpos => Type::Int8,
            Abs | Ceil | Floor | Trunc | Mod | Sign => match first {
                Type::Int2 | Type::Int4 => Type::Int8,
                t => t,
            },
            Round => match first {
                t if t.is_int() => Type::Decimal {
                    precision: None,
                    scale: None,
                },
                t => t,
            },
            Sqrt | Power | Random => Type::Float8,
            Coalesce | Nullif | Greatest | Least => args
                .iter()
                .find(|t| **t != Type::Unknown)
                .cloned()
                .unwrap_or(Type::Unknown),
            GenRandomUuid => Type::Uuid,
            DatePart => Type::Float8,
            DateTrunc => args.get(1).cloned().unwrap_or(Type::Timestamp),
            Age => Type::Interval,
        }
    }
}

fn arg_err(f: Func, args: &[Datum]) -> Error {
    Error::UndefinedFunction(format!(
        "{f:?}({})",
        args.iter()
            .map(|a| a.natural_type().pg_name())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn int_arg(d: &Datum) -> Option<i64> {
    match d {
        Datum::Int(i) => Some(*i),
        // A float argument rounds to the nearest integer; NaN, infinities and values past
        // the i64 range are not integers (`as` would saturate them silently).
        Datum::Float(f) => {
            let r = f.round_ties_even();
            (r.is_finite() && r >= i64::MIN as f64 && r < 9.223_372_036_854_776e18)
                .then_some(r as i64)
        }
        Datum::Decimal(d) => d.to_i64(),
        _ => None,
    }
}

/// The longest string a function may build (Postgres caps a value at 1 GB; a node serving
/// many sessions caps it lower).
const MAX_RESULT_BYTES: usize = 64 << 20;

/// Calls a function on evaluated arguments.
pub fn call(f: Func, args: Vec<Datum>) -> Result<Datum> {
    use Datum::*;
    use Func::*;
    f.check_arity(args.len())?;
    match f {
        Coalesce => return Ok(args.into_iter().find(|a| !a.is_null()).unwrap_or(Null)),
        Concat => {
            return Ok(String(
                args.iter()
                    .filter_map(|a| a.to_pg_text())
                    .collect::<Vec<_>>()
                    .concat(),
            ))
        }
        Nullif => {
            let mut it = args.into_iter();
            let (a, b) = (it.next().unwrap_or(Null), it.next().unwrap_or(Null));
            return Ok(
                if !a.is_null() && a.compare(&b) == Some(std::cmp::Ordering::Equal) {
                    Null
                } else {
                    a
                },
            );
        }
        Greatest | Least => {
            let mut best: Option<Datum> = None;
            for a in args.into_iter().filter(|a| !a.is_null()) {
                best = Some(match best {
                    None => a,
                    Some(b) => {
                        let ord = a.compare(&b).ok_or_else(|| {
                            Error::DatatypeMismatch("arguments do not compare".into())
                        })?;
                        if (f == Greatest) == ord.is_gt() {
                            a
                        } else {
                            b
                        }
                    }
                });
            }
            return Ok(best.unwrap_or(Null));
        }
        Random => return Ok(Float(rand_f64())),
        GenRandomUuid => return Ok(Uuid(uuid::Uuid::new_v4())),
        Version => {
            return Ok(String(format!(
                "bini {} (PostgreSQL 15 wire protocol)",
                env!("CARGO_PKG_VERSION")
            )))
        }
        CurrentDatabase => return Err(Error::Internal("current_database() unbound".into())),
        // `x = ANY(array)`: false for an empty array whatever x is, even NULL.
        ArrayContains => {
            if let String(a) = &args[0] {
                if parse_array(a)?.is_empty() {
                    return Ok(Bool(false));
                }
            }
        }
        _ => {}
    }
    if args.iter().any(Datum::is_null) {
        return Ok(Null);
    }
    let s0 = || match args.first() {
        Some(String(s)) => Ok(s.clone()),
        _ => Err(arg_err(f, &args)),
    };
    let n = |i: usize| {
        args.get(i)
            .and_then(int_arg)
            .ok_or_else(|| arg_err(f, &args))
    };
    let s = |i: usize| match args.get(i) {
        Some(String(s)) => Ok(s.clone()),
        _ => Err(arg_err(f, &args)),
    };
    Ok(match f {
        Lower => String(s0()?.to_lowercase()),
        Upper => String(s0()?.to_uppercase()),
        Length => match &args[0] {
            String(s) => Int(s.chars().count() as i64),
            Bytes(b) => Int(b.len() as i64),
            _ => return Err(arg_err(f, &args)),
        },
        Substr => {
            let text: Vec<char> = s0()?.chars().collect();
            let from = n(1)?;
            let len = if args.len() > 2 { Some(n(2)?) } else { None };
            if len.is_some_and(|l| l < 0) {
                return Err(Error::InvalidParameterValue(
                    "negative substring length not allowed".into(),
                ));
            }
            let start = from.max(1);
            // Past i64, the end is "the end of the string".
            let end = match len {
                Some(l) => from.saturating_add(l).max(start),
                None => i64::MAX,
            };
            String(
                text.iter()
                    .enumerate()
                    .filter(|(i, _)| {
                        let p = *i as i64 + 1;
                        p >= start && p < end
                    })
                    .map(|(_, c)| c)
                    .collect(),
            )
        }
        Trim | Ltrim | Rtrim => {
            let text = s0()?;
            let set: Vec<char> = if args.len() > 1 {
                s(1)?.chars().collect()
            } else {
                vec![' ']
            };
            String(match f {
                Trim => text.trim_matches(|c| set.contains(&c)).to_string(),
                Ltrim => text.trim_start_matches(|c| set.contains(&c)).to_string(),
                _ => text.trim_end_matches(|c| set.contains(&c)).to_string(),
            })
        }
        Replace => String(s0()?.replace(&s(1)?, &s(2)?)),
        Strpos => {
            let (hay, needle) = (s0()?, s(1)?);
            Int(hay
                .find(&needle)
                .map(|b| hay[..b].chars().count() as i64 + 1)
                .unwrap_or(0))
        }
        Left | Right => {
            let chars: Vec<char> = s0()?.chars().collect();
            let k = n(1)?;
            let len = chars.len() as i64;
            let take = if k >= 0 { k.min(len) } else { (len + k).max(0) } as usize;
            String(if f == Left {
                chars[..take].iter().collect()
            } else {
                chars[chars.len() - take..].iter().collect()
            })
        }
        Repeat => {
            let (text, times) = (s0()?, n(1)?.max(0) as usize);
            if text.len().saturating_mul(times) > MAX_RESULT_BYTES {
                return Err(Error::ProgramLimitExceeded(
                    "repeat() result is too large".into(),
                ));
            }
            String(text.repeat(times))
        }
        Reverse => String(s0()?.chars().rev().collect()),
        SplitPart => {
            let (text, delim, k) = (s0()?, s(1)?, n(2)?);
            if k <= 0 {
                return Err(Error::InvalidParameterValue(
                    "field position must be greater than zero".into(),
                ));
            }
            String(
                text.split(delim.as_str())
                    .nth(k as usize - 1)
                    .unwrap_or("")
                    .to_string(),
            )
        }
        Lpad | Rpad => {
            let text: Vec<char> = s0()?.chars().collect();
            let len = n(1)?.max(0);
            if len as u64 > (MAX_RESULT_BYTES / 4) as u64 {
                return Err(Error::ProgramLimitExceeded(format!(
                    "{}() result is too large",
                    if f == Lpad { "lpad" } else { "rpad" }
                )));
            }
            let len = len as usize;
            let fill: Vec<char> = if args.len() > 2 {
                s(2)?.chars().collect()
            } else {
                vec![' ']
            };
            if text.len() >= len || fill.is_empty() {
                String(text[..len.min(text.len())].iter().collect())
            } else {
                let pad: std::string::String = fill.iter().cycle().take(len - text.len()).collect();
                let t: std::string::String = text.iter().collect();
                String(if f == Lpad { pad + &t } else { t + &pad })
            }
        }
        Abs => match &args[0] {
            Int(i) => Int(i
                .checked_abs()
                .ok_or_else(|| Error::NumericOutOfRange("integer out of range".into()))?),
            Float(x) => Float(x.abs()),
            Decimal(d) => Decimal(d.abs()),
            _ => return Err(arg_err(f, &args)),
        },
        Round => {
            let digits = if args.len() > 1 { n(1)? } else { 0 };
            match &args[0] {
                Int(i) => Decimal(rust_decimal::Decimal::from(*i)),
                Float(x) => {
                    // Past 308 digits either way the scale factor is infinite or zero.
                    let m = 10f64.powi(digits.clamp(-308, 308) as i32);
                    let r = (x * m).round_ties_even() / m;
                    Float(if r.is_finite() { r } else { *x })
                }
                Decimal(d) => Decimal(d.round_dp_with_strategy(
                    digits.clamp(0, 28) as u32,
                    rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                )),
                _ => return Err(arg_err(f, &args)),
            }
        }
        Trunc | Ceil | Floor => match &args[0] {
            Int(i) => Int(*i),
            Float(x) => Float(match f {
                Trunc => x.trunc(),
                Ceil => x.ceil(),
                _ => x.floor(),
            }),
            Decimal(d) => Decimal(match f {
                Trunc => d.trunc(),
                Ceil => d.ceil(),
                _ => d.floor(),
            }),
            _ => return Err(arg_err(f, &args)),
        },
        Sqrt => {
            let x = to_f64(&args[0]).ok_or_else(|| arg_err(f, &args))?;
            if x < 0.0 {
                return Err(Error::InvalidParameterValue(
                    "cannot take square root of a negative number".into(),
                ));
            }
            Float(x.sqrt())
        }
        Power => {
            let (x, y) = (to_f64(&args[0]), to_f64(&args[1]));
            Float(
                x.zip(y)
                    .map(|(x, y)| x.powf(y))
                    .ok_or_else(|| arg_err(f, &args))?,
            )
        }
        Mod => crate::expr::binary(BinOp::Mod, args[0].clone(), args[1].clone())?,
        Sign => match &args[0] {
            Int(i) => Int(i.signum()),
            Float(x) => Float(if *x == 0.0 { 0.0 } else { x.signum() }),
            Decimal(d) => Decimal(if d.is_zero() {
                rust_decimal::Decimal::ZERO
            } else if d.is_sign_negative() {
                -rust_decimal::Decimal::ONE
            } else {
                rust_decimal::Decimal::ONE
            }),
            _ => return Err(arg_err(f, &args)),
        },
        DatePart => date_part(&s0()?.to_lowercase(), &args[1])?,
        DateTrunc => date_trunc(&s0()?.to_lowercase(), args[1].clone())?,
        Age => {
            let (a, b) = (
                to_timestamp(args[0].clone())?,
                to_timestamp(args[1].clone())?,
            );
            Interval(crate::types::Interval {
                months: 0,
                days: 0,
                micros: (a - b)
                    .num_microseconds()
                    .ok_or_else(|| Error::DatetimeOverflow("interval out of range".into()))?,
            })
        }
        JsonbTypeof => match &args[0] {
            Json(j) => String(
                match j {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Bool(_) => "boolean",
                    serde_json::Value::Number(_) => "number",
                    serde_json::Value::String(_) => "string",
                    serde_json::Value::Array(_) => "array",
                    serde_json::Value::Object(_) => "object",
                }
                .into(),
            ),
            _ => return Err(arg_err(f, &args)),
        },
        RegexMatch | RegexIMatch => {
            let re = regex::RegexBuilder::new(&s(1)?)
                .case_insensitive(f == RegexIMatch)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    Error::InvalidParameterValue(format!("invalid regular expression: {e}"))
                })?;
            Bool(re.is_match(&s0()?))
        }
        PgGetUserById => match int_arg(&args[0]) {
            Some(ROOT_OID) => String("root".into()),
            Some(other) => String(format!("unknown (OID={other})")),
            None => return Err(arg_err(f, &args)),
        },
        PgEncodingToChar => String(
            if int_arg(&args[0]) == Some(6) {
                "UTF8"
            } else {
                ""
            }
            .into(),
        ),
        PgTableIsVisible => Bool(true),
        ArrayToString => match (&args[0], &args[1]) {
            (String(x), String(sep)) => String(
                parse_array(x)?
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(sep),
            ),
            _ => return Err(arg_err(f, &args)),
        },
        ArrayUpper => match &args[0] {
            String(x) => match parse_array(x)?.len() {
                0 => Null,
                n => Int(n as i64),
            },
            _ => return Err(arg_err(f, &args)),
        },
        ArrayElement => match (&args[0], int_arg(&args[1])) {
            (String(x), Some(i)) => i
                .checked_sub(1)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| parse_array(x).ok()?.into_iter().nth(i)?)
                .map(String)
                .unwrap_or(Null),
            _ => return Err(arg_err(f, &args)),
        },
        ArrayContains => match &args[0] {
            String(x) => {
                let needle = args[1].to_string();
                let items = parse_array(x)?;
                if items.iter().any(|i| i.as_deref() == Some(needle.as_str())) {
                    Bool(true)
                } else if items.iter().any(Option::is_none) {
                    Null
                } else {
                    Bool(false)
                }
            }
            _ => return Err(arg_err(f, &args)),
        },
        FormatType => match int_arg(&args[0]).and_then(|o| u32::try_from(o).ok()) {
            Some(oid) => String(format_type(oid, int_arg(&args[1]).unwrap_or(-1))),
            None => return Err(arg_err(f, &args)),
        },
        PgGetExpr => String(args[0].to_string()),
        PgRelationIsPublishable => Bool(false),
        PgGetStatisticsObjDefColumns => Null,
        Coalesce | Concat | Nullif | Greatest | Least | Random | GenRandomUuid | Version
        | CurrentDatabase => unreachable!("handled above"),
    })
}

fn to_f64(d: &Datum) -> Option<f64> {
    match d {
        Datum::Int(i) => Some(*i as f64),
        Datum::Float(f) => Some(*f),
        Datum::Decimal(d) => Some(dec_to_f64(d)),
        _ => None,
    }
}

fn rand_f64() -> f64 {
    // uuid's v4 generator is our source of randomness here; 53 random bits make a float.
    let b = uuid::Uuid::new_v4().as_u128() as u64;
    (b >> 11) as f64 / (1u64 << 53) as f64
}

fn bad_datetime(what: &str, s: &str) -> Error {
    Error::InvalidDatetime(format!("invalid input syntax for type {what}: \"{s}\""))
}

/// A value as a date.
pub fn to_date(d: Datum) -> Result<NaiveDate> {
    match d {
        Datum::Date(d) => Ok(d),
        Datum::Timestamp(t) => Ok(t.date()),
        Datum::TimestampTz(t) => Ok(t.naive_utc().date()),
        Datum::String(s) => {
            let t = s.trim();
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .or_else(|_| parse_timestamp_text(t).map(|ts| ts.date()).ok_or(()))
                .map_err(|_| bad_datetime("date", &s))
        }
        other => Err(Error::DatatypeMismatch(format!(
            "cannot cast {} to date",
            other.natural_type().pg_name()
        ))),
    }
}

fn parse_timestamp_text(t: &str) -> Option<NaiveDateTime> {
    const FORMATS: [&str; 4] = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ];
    FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_time(NaiveTime::MIN))
        })
}

/// A timestamp with an offset (`…+02`, `…Z`); `None` when the text names no offset.
fn parse_offset_timestamp(t: &str) -> Option<DateTime<chrono::FixedOffset>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt);
    }
    [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ]
    .iter()
    .find_map(|f| DateTime::parse_from_str(t, f).ok())
}

fn parse_timestamptz_text(t: &str) -> Option<DateTime<Utc>> {
    if let Some(dt) = parse_offset_timestamp(t) {
        return Some(dt.with_timezone(&Utc));
    }
    let stripped = t
        .strip_suffix(" UTC")
        .or_else(|| t.strip_suffix('Z'))
        .unwrap_or(t);
    parse_timestamp_text(stripped).map(|n| n.and_utc())
}

/// A value as a timestamp without time zone.
pub fn to_timestamp(d: Datum) -> Result<NaiveDateTime> {
    match d {
        Datum::Timestamp(t) => Ok(t),
        Datum::TimestampTz(t) => Ok(t.naive_utc()),
        Datum::Date(d) => Ok(d.and_time(NaiveTime::MIN)),
        Datum::String(s) => {
            let t = s.trim();
            parse_timestamp_text(t)
                // An offset is ignored, as Postgres ignores it for TIMESTAMP.
                .or_else(|| parse_offset_timestamp(t).map(|x| x.naive_local()))
                .or_else(|| parse_timestamptz_text(t).map(|x| x.naive_utc()))
                .ok_or_else(|| bad_datetime("timestamp", &s))
        }
        other => Err(Error::DatatypeMismatch(format!(
            "cannot cast {} to timestamp",
            other.natural_type().pg_name()
        ))),
    }
}

/// A value as a timestamp with time zone (the session zone is UTC).
pub fn to_timestamptz(d: Datum) -> Result<DateTime<Utc>> {
    match d {
        Datum::TimestampTz(t) => Ok(t),
        Datum::String(s) => {
            parse_timestamptz_text(s.trim()).ok_or_else(|| bad_datetime("timestamptz", &s))
        }
        other => Ok(to_timestamp(other)?.and_utc()),
    }
}

/// Parses interval text: `1 year 2 mons 3 days 04:05:06`, `2 hours`, `90 minutes`, ISO
/// `P1DT2H`, or a bare number of seconds.
pub fn parse_interval(s: &str) -> Result<Interval> {
    let bad = || bad_datetime("interval", s);
    let text = s.trim().to_ascii_lowercase();
    // Each term as a wide integer; anything past 1e30 overflows the interval anyway, and
    // NaN or infinity is no amount at all.
    let term = |x: f64| -> Result<i128> {
        if !x.is_finite() {
            return Err(bad());
        }
        if x.abs() > 1e30 {
            return Err(Error::DatetimeOverflow("interval out of range".into()));
        }
        Ok(x.round() as i128)
    };
    if let Ok(secs) = text.parse::<f64>() {
        return interval_from_parts(0, 0, term(secs * 1e6)?);
    }
    let (mut months, mut days, mut micros) = (0i128, 0i128, 0i128);
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    let mut sign_ago = false;
    while i < tokens.len() {
        let tok = tokens[i].trim_start_matches('@');
        if tok.is_empty() {
            i += 1;
            continue;
        }
        if tok == "ago" {
            sign_ago = true;
            i += 1;
            continue;
        }
        if tok.contains(':') {
            let neg = tok.starts_with('-');
            let parts: Vec<&str> = tok.trim_start_matches(['-', '+']).split(':').collect();
            let h: i64 = parts.first().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let m: i64 = parts.get(1).and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let sec: f64 = match parts.get(2) {
                Some(p) => p.parse().map_err(|_| bad())?,
                None => 0.0,
            };
            let us = (h as i128 * 3600 + m as i128 * 60) * 1_000_000 + term(sec * 1e6)?;
            micros += if neg { -us } else { us };
            i += 1;
            continue;
        }
        let (num, unit) = match tok.find(|c: char| c.is_ascii_alphabetic()) {
            Some(p) if p > 0 => (&tok[..p], tok[p..].to_string()),
            _ => {
                let unit = tokens.get(i + 1).ok_or_else(bad)?;
                i += 1;
                (tok, unit.to_string())
            }
        };
        let v: f64 = num.parse().map_err(|_| bad())?;
        let unit = unit.trim_end_matches(',');
        // Terms are bounded (1e30), so the i128 sums cannot overflow; the sums are
        // range-checked at the end.
        match unit {
            "year" | "years" | "y" | "yr" | "yrs" => months += term((v * 12.0).trunc())?,
            "month" | "months" | "mon" | "mons" => months += term(v.trunc())?,
            "week" | "weeks" | "w" => days += term((v * 7.0).trunc())?,
            "day" | "days" | "d" => days += term(v.trunc())?,
            "hour" | "hours" | "h" | "hr" | "hrs" => micros += term(v * 3.6e9)?,
            "minute" | "minutes" | "min" | "mins" | "m" => micros += term(v * 6e7)?,
            "second" | "seconds" | "sec" | "secs" | "s" => micros += term(v * 1e6)?,
            "millisecond" | "milliseconds" | "ms" => micros += term(v * 1e3)?,
            "microsecond" | "microseconds" | "us" => micros += term(v)?,
            _ => return Err(bad()),
        }
        i += 1;
    }
    let sign = if sign_ago { -1 } else { 1 };
    interval_from_parts(months * sign, days * sign, micros * sign)
}

/// An interval from wide sums of its parts, or an error when a part does not fit.
fn interval_from_parts(months: i128, days: i128, micros: i128) -> Result<Interval> {
    let out = || Error::DatetimeOverflow("interval out of range".into());
    Ok(Interval {
        months: i32::try_from(months).map_err(|_| out())?,
        days: i32::try_from(days).map_err(|_| out())?,
        micros: i64::try_from(micros).map_err(|_| out())?,
    })
}

fn add_interval(t: NaiveDateTime, iv: &Interval, sign: i64) -> Result<NaiveDateTime> {
    let overflow = || Error::DatetimeOverflow("timestamp out of range".into());
    let months = iv.months as i64 * sign;
    let t = if months >= 0 {
        t.checked_add_months(chrono::Months::new(months as u32))
    } else {
        t.checked_sub_months(chrono::Months::new((-months) as u32))
    }
    .ok_or_else(overflow)?;
    chrono::Duration::try_days(iv.days as i64 * sign)
        .and_then(|d| t.checked_add_signed(d))
        .zip(iv.micros.checked_mul(sign))
        .and_then(|(t, us)| t.checked_add_signed(chrono::Duration::microseconds(us)))
        .ok_or_else(overflow)
}

/// `+` and `-` between dates, timestamps and intervals.
pub fn datetime_arith(op: BinOp, a: Datum, b: Datum) -> Result<Datum> {
    use Datum::*;
    let sign = match op {
        BinOp::Add => 1,
        BinOp::Sub => -1,
        _ => 0,
    };
    let unsupported = |a: &Datum, b: &Datum| {
        Error::DatatypeMismatch(format!(
            "unsupported binary operator: <{}> {op:?} <{}>",
            a.natural_type().pg_name(),
            b.natural_type().pg_name()
        ))
    };
    if sign == 0 {
        return Err(unsupported(&a, &b));
    }
    Ok(match (a, b) {
        (Timestamp(t), Interval(i)) => Timestamp(add_interval(t, &i, sign)?),
        (TimestampTz(t), Interval(i)) => {
            TimestampTz(add_interval(t.naive_utc(), &i, sign)?.and_utc())
        }
        (Date(d), Interval(i)) => Timestamp(add_interval(d.and_time(NaiveTime::MIN), &i, sign)?),
        (Interval(i), Timestamp(t)) if sign == 1 => Timestamp(add_interval(t, &i, 1)?),
        (Interval(i), TimestampTz(t)) if sign == 1 => {
            TimestampTz(add_interval(t.naive_utc(), &i, 1)?.and_utc())
        }
        (Date(d), Int(n)) => Date(
            n.checked_mul(sign)
                .and_then(chrono::Duration::try_days)
                .and_then(|days| d.checked_add_signed(days))
                .ok_or_else(|| Error::DatetimeOverflow("date out of range".into()))?,
        ),
        (Date(x), Date(y)) if sign == -1 => Int((x - y).num_days()),
        (Timestamp(x), Timestamp(y)) if sign == -1 => Interval(micros_interval(x - y)?),
        (TimestampTz(x), TimestampTz(y)) if sign == -1 => Interval(micros_interval(x - y)?),
        (Interval(x), Interval(y)) => {
            let sign = sign as i128;
            Interval(interval_from_parts(
                x.months as i128 + y.months as i128 * sign,
                x.days as i128 + y.days as i128 * sign,
                x.micros as i128 + y.micros as i128 * sign,
            )?)
        }
        (a, b) => return Err(unsupported(&a, &b)),
    })
}

fn micros_interval(d: chrono::Duration) -> Result<Interval> {
    let overflow = || Error::DatetimeOverflow("interval out of range".into());
    let us = d.num_microseconds().ok_or_else(overflow)?;
    Ok(Interval {
        months: 0,
        days: i32::try_from(us / 86_400_000_000).map_err(|_| overflow())?,
        micros: us % 86_400_000_000,
    })
}

fn date_part(field: &str, d: &Datum) -> Result<Datum> {
    if let Datum::Interval(iv) = d {
        let v = match field {
            "year" | "years" => (iv.months / 12) as f64,
            "month" | "months" => (iv.months % 12) as f64,
            "day" | "days" => iv.days as f64,
            "hour" | "hours" => (iv.micros / 3_600_000_000) as f64,
            "minute" | "minutes" => (iv.micros / 60_000_000 % 60) as f64,
            "second" | "seconds" => (iv.micros % 60_000_000) as f64 / 1e6,
            "epoch" => iv.total_micros() as f64 / 1e6,
            _ => {
                return Err(Error::InvalidParameterValue(format!(
                    "unsupported field {field}"
                )))
            }
        };
        return Ok(Datum::Float(v));
    }
    let t = to_timestamp(d.clone())?;
    let v = match field {
        "year" | "years" => t.year() as f64,
        "month" | "months" => t.month() as f64,
        "day" | "days" => t.day() as f64,
        "hour" | "hours" => t.hour() as f64,
        "minute" | "minutes" => t.minute() as f64,
        "second" | "seconds" => t.second() as f64 + t.nanosecond() as f64 / 1e9,
        "dow" => t.weekday().num_days_from_sunday() as f64,
        "isodow" => t.weekday().number_from_monday() as f64,
        "doy" => t.ordinal() as f64,
        "week" => t.iso_week().week() as f64,
        "quarter" => ((t.month() - 1) / 3 + 1) as f64,
        "epoch" => t.and_utc().timestamp_micros() as f64 / 1e6,
        "millisecond" | "milliseconds" => (t.second() as f64 * 1e3) + t.nanosecond() as f64 / 1e6,
        "microsecond" | "microseconds" => (t.second() as f64 * 1e6) + t.nanosecond() as f64 / 1e3,
        _ => {
            return Err(Error::InvalidParameterValue(format!(
                "unsupported field {field}"
            )))
        }
    };
    Ok(Datum::Float(v))
}

fn date_trunc(field: &str, d: Datum) -> Result<Datum> {
    let is_tz = matches!(d, Datum::TimestampTz(_));
    let t = to_timestamp(d)?;
    let date = t.date();
    let truncated = match field {
        "microseconds" | "microsecond" => t,
        "millisecond" | "milliseconds" => t
            .with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap_or(t),
        "second" | "seconds" => t.with_nanosecond(0).unwrap_or(t),
        "minute" | "minutes" => date.and_hms_opt(t.hour(), t.minute(), 0).unwrap_or(t),
        "hour" | "hours" => date.and_hms_opt(t.hour(), 0, 0).unwrap_or(t),
        "day" | "days" => date.and_time(NaiveTime::MIN),
        "week" | "weeks" => date
            .checked_sub_days(chrono::Days::new(
                date.weekday().num_days_from_monday() as u64
            ))
            .unwrap_or(date)
            .and_time(NaiveTime::MIN),
        "month" | "months" => date.with_day(1).unwrap_or(date).and_time(NaiveTime::MIN),
        "quarter" => NaiveDate::from_ymd_opt(t.year(), (t.month() - 1) / 3 * 3 + 1, 1)
            .unwrap_or(date)
            .and_time(NaiveTime::MIN),
        "year" | "years" => NaiveDate::from_ymd_opt(t.year(), 1, 1)
            .unwrap_or(date)
            .and_time(NaiveTime::MIN),
        _ => {
            return Err(Error::InvalidParameterValue(format!(
                "unsupported field {field}"
            )))
        }
    };
    Ok(if is_tz {
        Datum::TimestampTz(truncated.and_utc())
    } else {
        Datum::Timestamp(truncated)
    })
}

/// Decimal helper for aggregates: the average of a sum over a count.
pub fn decimal_avg(sum: Decimal, count: i64) -> Result<Decimal> {
    sum.checked_div(Decimal::from(count))
        .map(|d| d.round_dp(16).normalize())
        .ok_or_else(|| Error::NumericOutOfRange("numeric value out of range".into()))
}

/// The elements of a one-dimensional array literal (`{a,"b c",NULL}`; NULL is `None`).
pub fn parse_array(text: &str) -> Result<Vec<Option<std::string::String>>> {
    let bad = || Error::InvalidTextRepresentation(format!("malformed array literal: \"{text}\""));
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut item = std::string::String::new();
        let mut quoted = false;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().ok_or_else(bad)?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(bad()),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            chars.next();
            if c == ',' {
                break;
            }
            if quoted && !c.is_whitespace() {
                return Err(bad());
            }
            item.push(c);
        }
        let item = if quoted {
            item
        } else {
            item.trim().to_string()
        };
        out.push((quoted || !item.eq_ignore_ascii_case("null")).then_some(item));
    }
    Ok(out)
}

/// The SQL name of the type with this oid and modifier, as Postgres's `format_type` spells it.
fn format_type(oid: u32, typmod: i64) -> std::string::String {
    let name = match oid {
        1043 => "character varying",
        1042 => "character",
        19 => "name",
        26 => "oid",
        _ => match Type::from_oid(oid) {
            Some(ty) => ty.pg_name(),
            None => return "???".into(),
        },
    };
    match oid {
        1043 | 1042 if typmod >= 4 => format!("{name}({})", typmod - 4),
        1700 if typmod >= 4 => {
            let t = typmod - 4;
            format!("{name}({},{})", (t >> 16) & 0xffff, t & 0xffff)
        }
        _ => name.to_string(),
    }
}

/// Values as Postgres prints a one-dimensional array: `{a,"b c",NULL}`. bini has no array
/// type yet; `ARRAY(SELECT …)` yields this text.
pub fn array_literal(values: impl Iterator<Item = Datum>) -> String {
    let items: Vec<String> = values
        .map(|v| {
            if v.is_null() {
                return "NULL".to_string();
            }
            let s = v.to_string();
            let plain = !s.is_empty()
                && !s.eq_ignore_ascii_case("null")
                && !s
                    .chars()
                    .any(|c| matches!(c, ',' | '{' | '}' | '"' | '\\') || c.is_whitespace());
            if plain {
                s
            } else {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("{{{}}}", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        let iv = parse_interval("1 year 2 mons 3 days 04:05:06").expect("parses");
        assert_eq!(iv.to_string(), "1 year 2 mons 3 days 04:05:06");
        assert_eq!(
            parse_interval("90 minutes").expect("parses").to_string(),
            "01:30:00"
        );
        assert!(parse_interval("3 fortnights").is_err());
    }

    #[test]
    fn date_arithmetic() {
        let d = Datum::Date(NaiveDate::from_ymd_opt(2024, 1, 31).expect("date"));
        let month = Datum::Interval(parse_interval("1 month").expect("parses"));
        let r = datetime_arith(BinOp::Add, d, month).expect("adds");
        assert_eq!(r.to_string(), "2024-02-29 00:00:00");
        assert_eq!(
            call(
                Func::Substr,
                vec![Datum::String("hello".into()), Datum::Int(2), Datum::Int(3)]
            )
            .expect("calls")
            .to_string(),
            "ell"
        );
    }
}
