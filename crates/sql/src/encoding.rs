//! How rows and index entries become KV pairs.
//!
//! ```text
//!   key:   0x05 <table id:4> <index id:4> <key datum>... [<primary key datum>...]
//!   value: (<column id varint> <tag> <payload>)...            primary index: the whole row
//!          <primary key datums, value-encoded>                  secondary index
//! ```
//!
//! - **Key datums are order-preserving**: comparing encoded keys bytewise orders them as SQL
//!   orders the values, NULL first. Equal values (in SQL's sense: `1.0 = 1.00`) encode to equal
//!   bytes, so a unique index is a unique key. Keys are never decoded: the row value carries
//!   every column, and a secondary index entry carries the primary key in its value.
//! - **Row values are tagged by column id**, not position: adding a column leaves old rows
//!   readable (the column reads as its default), dropping one leaves bytes that are ignored.
//!   NULL columns are absent.
//! - JSONB is not indexable; the binder refuses such keys before anything is encoded.

use chrono::{DateTime, NaiveDate};
use rust_decimal::Decimal;

use crate::error::{Error, Result};
use crate::types::{Datum, Interval, Type};

/// The first byte of every table key.
pub const TABLE_PREFIX: u8 = 0x05;

/// The span of all of a table's keys.
pub fn table_span(table_id: u32) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![TABLE_PREFIX];
    start.extend_from_slice(&table_id.to_be_bytes());
    let mut end = vec![TABLE_PREFIX];
    end.extend_from_slice(&(table_id as u64 + 1).to_be_bytes()[4..]);
    if table_id == u32::MAX {
        end = vec![TABLE_PREFIX + 1];
    }
    (start, end)
}

/// The prefix of one index of a table.
pub fn index_prefix(table_id: u32, index_id: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.push(TABLE_PREFIX);
    k.extend_from_slice(&table_id.to_be_bytes());
    k.extend_from_slice(&index_id.to_be_bytes());
    k
}

/// The smallest key above every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0xff, 0xff]
}

const KEY_NULL: u8 = 0x00;
const KEY_VALUE: u8 = 0x01;

/// Appends the order-preserving encoding of `d` to `out`.
pub fn encode_key_datum(d: &Datum, out: &mut Vec<u8>) -> Result<()> {
    if d.is_null() {
        out.push(KEY_NULL);
        return Ok(());
    }
    out.push(KEY_VALUE);
    match d {
        Datum::Null => unreachable!("handled above"),
        Datum::Bool(b) => out.push(*b as u8),
        Datum::Int(i) => out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes()),
        Datum::Float(f) => {
            // Negative numbers flip every bit, positive ones the sign bit; -0 is 0; NaN last.
            let f = if *f == 0.0 { 0.0 } else { *f };
            let bits = if f.is_nan() {
                u64::MAX
            } else if f.is_sign_negative() {
                !f.to_bits()
            } else {
                f.to_bits() ^ (1 << 63)
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Datum::Decimal(d) => encode_decimal_key(d, out),
        Datum::String(s) => encode_bytes_key(s.as_bytes(), out),
        Datum::Bytes(b) => encode_bytes_key(b, out),
        Datum::Date(d) => {
            let days = days_since_epoch(d);
            out.extend_from_slice(&((days as u32) ^ (1 << 31)).to_be_bytes());
        }
        Datum::Timestamp(t) => {
            let us = t.and_utc().timestamp_micros();
            out.extend_from_slice(&((us as u64) ^ (1 << 63)).to_be_bytes());
        }
        Datum::TimestampTz(t) => {
            let us = t.timestamp_micros();
            out.extend_from_slice(&((us as u64) ^ (1 << 63)).to_be_bytes());
        }
        Datum::Interval(i) => {
            let total = i.total_micros();
            out.extend_from_slice(&((total as u128) ^ (1 << 127)).to_be_bytes());
        }
        Datum::Uuid(u) => out.extend_from_slice(u.as_bytes()),
        Datum::Json(_) => {
            return Err(Error::FeatureNotSupported(
                "a JSONB column cannot be part of an index or primary key".into(),
            ))
        }
    }
    Ok(())
}

/// Decodes one key datum of type `ty` from the front of `buf` (for display), returning it
/// and the rest; `None` for types whose key form is not decoded here.
pub fn decode_key_datum<'a>(ty: &Type, buf: &'a [u8]) -> Option<(Datum, &'a [u8])> {
    let (&tag, rest) = buf.split_first()?;
    if tag == KEY_NULL {
        return Some((Datum::Null, rest));
    }
    let fixed = |n: usize| (rest.len() >= n).then(|| rest.split_at(n));
    Some(match ty {
        Type::Bool => (Datum::Bool(*rest.first()? != 0), &rest[1..]),
        Type::Int2 | Type::Int4 | Type::Int8 => {
            let (b, rest) = fixed(8)?;
            let v = u64::from_be_bytes(b.try_into().ok()?) ^ (1 << 63);
            (Datum::Int(v as i64), rest)
        }
        Type::Uuid => {
            let (b, rest) = fixed(16)?;
            (Datum::Uuid(uuid::Uuid::from_slice(b).ok()?), rest)
        }
        Type::String { .. } | Type::Bytes => {
            let mut out = Vec::new();
            let mut i = 0;
            loop {
                match (rest.get(i)?, rest.get(i + 1)) {
                    (0, Some(0x01)) => break,
                    (0, Some(0xff)) => {
                        out.push(0);
                        i += 2;
                    }
                    (&b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            let d = if *ty == Type::Bytes {
                Datum::Bytes(out)
            } else {
                Datum::String(String::from_utf8(out).ok()?)
            };
            (d, &rest[i + 2..])
        }
        _ => return None,
    })
}

/// Bytes with 0x00 escaped as 0x00 0xff and a 0x00 0x01 terminator: a prefix sorts first.
fn encode_bytes_key(b: &[u8], out: &mut Vec<u8>) {
    for &byte in b {
        out.push(byte);
        if byte == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Decimals as sign, exponent and digit string, so `1.0`, `1.00` and `1` encode alike:
/// zero is `0x02`; a positive value `0.d1d2… × 10^e` is `0x03`, `e` (sign-flipped), the digits
/// and a 0x00; a negative one is `0x01`, `-e`, the complemented digits and 0xff.
fn encode_decimal_key(d: &Decimal, out: &mut Vec<u8>) {
    let n = d.normalize();
    if n.is_zero() {
        out.push(0x02);
        return;
    }
    let digits = n.mantissa().unsigned_abs().to_string();
    let exp = digits.len() as i32 - n.scale() as i32;
    if n.is_sign_positive() {
        out.push(0x03);
        out.extend_from_slice(&((exp as u32) ^ (1 << 31)).to_be_bytes());
        out.extend(digits.bytes());
        out.push(0x00);
    } else {
        out.push(0x01);
        out.extend_from_slice(&(((-exp) as u32) ^ (1 << 31)).to_be_bytes());
        out.extend(digits.bytes().map(|b| !b));
        out.push(0xff);
    }
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

fn days_since_epoch(d: &NaiveDate) -> i32 {
    d.signed_duration_since(epoch()).num_days() as i32
}

const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_FLOAT: u8 = 4;
const TAG_DECIMAL: u8 = 5;
const TAG_STRING: u8 = 6;
const TAG_BYTES: u8 = 7;
const TAG_DATE: u8 = 8;
const TAG_TIMESTAMP: u8 = 9;
const TAG_TIMESTAMPTZ: u8 = 10;
const TAG_INTERVAL: u8 = 11;
const TAG_UUID: u8 = 12;
const TAG_JSON: u8 = 13;

fn put_uvarint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(v: i64, out: &mut Vec<u8>) {
    put_uvarint(((v << 1) ^ (v >> 63)) as u64, out);
}

/// Appends one value-encoded datum (tag and payload; nothing for NULL's payload).
pub fn encode_value_datum(d: &Datum, out: &mut Vec<u8>) {
    match d {
        Datum::Null => {}
        Datum::Bool(false) => out.push(TAG_FALSE),
        Datum::Bool(true) => out.push(TAG_TRUE),
        Datum::Int(i) => {
            out.push(TAG_INT);
            put_varint(*i, out);
        }
        Datum::Float(f) => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Datum::Decimal(d) => {
            out.push(TAG_DECIMAL);
            out.extend_from_slice(&d.serialize());
        }
        Datum::String(s) => {
            out.push(TAG_STRING);
            put_uvarint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Datum::Bytes(b) => {
            out.push(TAG_BYTES);
            put_uvarint(b.len() as u64, out);
            out.extend_from_slice(b);
        }
        Datum::Date(d) => {
            out.push(TAG_DATE);
            put_varint(days_since_epoch(d) as i64, out);
        }
        Datum::Timestamp(t) => {
            out.push(TAG_TIMESTAMP);
            put_varint(t.and_utc().timestamp_micros(), out);
        }
        Datum::TimestampTz(t) => {
            out.push(TAG_TIMESTAMPTZ);
            put_varint(t.timestamp_micros(), out);
        }
        Datum::Interval(i) => {
            out.push(TAG_INTERVAL);
            put_varint(i.months as i64, out);
            put_varint(i.days as i64, out);
            put_varint(i.micros, out);
        }
        Datum::Uuid(u) => {
            out.push(TAG_UUID);
            out.extend_from_slice(u.as_bytes());
        }
        Datum::Json(j) => {
            out.push(TAG_JSON);
            let s = j.to_string();
            put_uvarint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Encodes a row as `(column id, datum)` pairs; NULLs are left out.
pub fn encode_row<'a>(cols: impl Iterator<Item = (u32, &'a Datum)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for (id, d) in cols {
        if d.is_null() {
            continue;
        }
        put_uvarint(id as u64, &mut out);
        encode_value_datum(d, &mut out);
    }
    out
}

/// Encodes datums positionally (secondary index values: the primary key). NULL is tag 0.
pub fn encode_datums(ds: &[Datum]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in ds {
        if d.is_null() {
            out.push(0);
        } else {
            encode_value_datum(d, &mut out);
        }
    }
    out
}

/// A cursor over value-encoded bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn corrupt() -> Error {
        Error::Internal("a stored row does not decode".into())
    }

    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.buf.split_first().ok_or_else(Self::corrupt)?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Self::corrupt());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn uvarint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Self::corrupt())
    }

    fn varint(&mut self) -> Result<i64> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn datum(&mut self, tag: u8) -> Result<Datum> {
        Ok(match tag {
            0 => Datum::Null,
            TAG_FALSE => Datum::Bool(false),
            TAG_TRUE => Datum::Bool(true),
            TAG_INT => Datum::Int(self.varint()?),
            TAG_FLOAT => Datum::Float(f64::from_bits(u64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))),
            TAG_DECIMAL => Datum::Decimal(Decimal::deserialize(
                self.take(16)?.try_into().expect("16 bytes"),
            )),
            TAG_STRING => {
                let n = self.uvarint()? as usize;
                let b = self.take(n)?;
                Datum::String(String::from_utf8(b.to_vec()).map_err(|_| Self::corrupt())?)
            }
            TAG_BYTES => {
                let n = self.uvarint()? as usize;
                Datum::Bytes(self.take(n)?.to_vec())
            }
            TAG_DATE => {
                let days = self.varint()?;
                Datum::Date(
                    epoch()
                        .checked_add_signed(chrono::Duration::days(days))
                        .ok_or_else(Self::corrupt)?,
                )
            }
            TAG_TIMESTAMP => Datum::Timestamp(
                DateTime::from_timestamp_micros(self.varint()?)
                    .ok_or_else(Self::corrupt)?
                    .naive_utc(),
            ),
            TAG_TIMESTAMPTZ => Datum::TimestampTz(
                DateTime::from_timestamp_micros(self.varint()?).ok_or_else(Self::corrupt)?,
            ),
            TAG_INTERVAL => Datum::Interval(Interval {
                months: self.varint()? as i32,
                days: self.varint()? as i32,
                micros: self.varint()?,
            }),
            TAG_UUID => Datum::Uuid(uuid::Uuid::from_bytes(
                self.take(16)?.try_into().expect("16 bytes"),
            )),
            TAG_JSON => {
                let n = self.uvarint()? as usize;
                Datum::Json(serde_json::from_slice(self.take(n)?).map_err(|_| Self::corrupt())?)
            }
            _ => return Err(Self::corrupt()),
        })
    }
}

/// Decodes a row into `(column id, datum)` pairs.
pub fn decode_row(buf: &[u8]) -> Result<Vec<(u32, Datum)>> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        let id = r.uvarint()? as u32;
        let tag = r.byte()?;
        out.push((id, r.datum(tag)?));
    }
    Ok(out)
}

/// Decodes positionally encoded datums (secondary index values).
pub fn decode_datums(buf: &[u8]) -> Result<Vec<Datum>> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        let tag = r.byte()?;
        out.push(r.datum(tag)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn key_datums_decode_for_display() {
        let vals = [
            (Type::Int8, Datum::Int(-5)),
            (Type::TEXT, Datum::String("a\0b".into())),
            (Type::Bytes, Datum::Bytes(vec![0, 0xff, 1])),
            (Type::Bool, Datum::Bool(true)),
            (Type::Int4, Datum::Null),
        ];
        let mut key = Vec::new();
        for (_, d) in &vals {
            encode_key_datum(d, &mut key).expect("encodes");
        }
        let mut rest = key.as_slice();
        for (ty, d) in &vals {
            let (got, r) = decode_key_datum(ty, rest).expect("decodes");
            assert_eq!(
                got.compare(d),
                if d.is_null() {
                    None
                } else {
                    Some(std::cmp::Ordering::Equal)
                }
            );
            rest = r;
        }
        assert!(rest.is_empty());
    }

    fn key(d: &Datum) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key_datum(d, &mut out).expect("indexable");
        out
    }

    #[test]
    fn keys_order_like_values() {
        let dec = |s: &str| Datum::Decimal(Decimal::from_str(s).expect("decimal"));
        let ordered = [
            vec![
                Datum::Null,
                Datum::Int(i64::MIN),
                Datum::Int(-1),
                Datum::Int(0),
            ],
            vec![
                Datum::Float(f64::NEG_INFINITY),
                Datum::Float(-2.5),
                Datum::Float(0.0),
                Datum::Float(1e-300),
                Datum::Float(3.0),
                Datum::Float(f64::NAN),
            ],
            vec![
                dec("-100"),
                dec("-10.5"),
                dec("-10"),
                dec("-0.001"),
                dec("0"),
                dec("0.001"),
                dec("0.0011"),
                dec("9.99"),
                dec("10"),
                dec("10.5"),
                dec("100"),
            ],
            vec![
                Datum::String("".into()),
                Datum::String("a".into()),
                Datum::String("a\0".into()),
                Datum::String("ab".into()),
                Datum::String("b".into()),
            ],
        ];
        for seq in ordered {
            for w in seq.windows(2) {
                assert!(key(&w[0]) < key(&w[1]), "{:?} < {:?}", w[0], w[1]);
            }
        }
        assert_eq!(key(&dec("1.0")), key(&dec("1.00")));
        assert_eq!(key(&Datum::Float(-0.0)), key(&Datum::Float(0.0)));
    }

    #[test]
    fn rows_round_trip() {
        let row = vec![
            (1, Datum::Int(-42)),
            (2, Datum::String("héllo".into())),
            (
                4,
                Datum::Decimal(Decimal::from_str("-12.340").expect("decimal")),
            ),
            (5, Datum::Bool(false)),
            (7, Datum::Float(1.5)),
            (9, Datum::Json(serde_json::json!({"a": [1, "x"]}))),
            (
                10,
                Datum::Interval(Interval {
                    months: -1,
                    days: 2,
                    micros: 3,
                }),
            ),
        ];
        let bytes = encode_row(row.iter().map(|(i, d)| (*i, d)));
        assert_eq!(decode_row(&bytes).expect("decodes"), row);
        let ds = vec![Datum::Null, Datum::Int(7), Datum::String("k".into())];
        assert_eq!(decode_datums(&encode_datums(&ds)).expect("decodes"), ds);
        assert!(decode_row(&[1, 99]).is_err());
    }
}
