//! Values on the wire: result rows in text or binary format, and Bind parameters back into
//! datums.
//!
//! Text is each datum's Postgres text form. Binary follows Postgres's send/receive functions:
//! big-endian integers and floats, dates as days and timestamps as microseconds since
//! 2000-01-01, intervals as (microseconds, days, months), UUIDs as 16 bytes, JSONB as a
//! version byte then text, NUMERIC through `rust_decimal`'s implementation.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use postgres_types::FromSql;

use bini_sql::{Column, Datum, Error, Interval, Type as SqlType};

/// The wire type of a bini type.
pub fn pg_type(t: &SqlType) -> Type {
    Type::from_oid(t.oid()).unwrap_or(Type::TEXT)
}

/// Row descriptions for result columns.
pub fn fields(columns: &[Column], format: &Format) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            FieldInfo::new(
                c.name.clone(),
                None,
                None,
                pg_type(&c.ty),
                format.format_for(i),
            )
        })
        .collect()
}

/// A row description and the encoded rows.
pub type EncodedRows = (Arc<Vec<FieldInfo>>, Vec<PgWireResult<DataRow>>);

/// Encodes rows for the wire.
pub fn rows(
    columns: &[Column],
    rows: Vec<Vec<Datum>>,
    format: &Format,
) -> PgWireResult<EncodedRows> {
    let schema = Arc::new(fields(columns, format));
    let out = encode_rows(&schema, columns, rows, format)?;
    Ok((schema, out))
}

/// Encodes rows for the wire under a row description made by [`fields`].
pub fn encode_rows(
    schema: &Arc<Vec<FieldInfo>>,
    columns: &[Column],
    rows: Vec<Vec<Datum>>,
    format: &Format,
) -> PgWireResult<Vec<PgWireResult<DataRow>>> {
    let mut encoder = DataRowEncoder::new(schema.clone());
    let opts = FormatOptions::default();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        for (i, d) in row.iter().enumerate() {
            let ty = columns
                .get(i)
                .map(|c| c.ty.clone())
                .unwrap_or(SqlType::TEXT);
            let pgt = pg_type(&ty);
            match format.format_for(i) {
                FieldFormat::Text => encoder.encode_field_with_type_and_format(
                    &d.to_pg_text(),
                    &pgt,
                    FieldFormat::Text,
                    &opts,
                )?,
                FieldFormat::Binary => match d {
                    Datum::Decimal(x) => encoder.encode_field_with_type_and_format(
                        x,
                        &Type::NUMERIC,
                        FieldFormat::Binary,
                        &opts,
                    )?,
                    other => encoder.encode_field_with_type_and_format(
                        &binary(other, &ty).map_err(|e| crate::user_error(&e))?,
                        &Type::BYTEA,
                        FieldFormat::Binary,
                        &opts,
                    )?,
                },
            }
        }
        out.push(Ok(encoder.take_row()));
    }
    Ok(out)
}

fn pg_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date")
}

const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The binary send form of a datum as a column of type `ty` (`None` for NULL). A value the
/// column's width cannot hold is an error (22003), never sent wrapped.
fn binary(d: &Datum, ty: &SqlType) -> Result<Option<Vec<u8>>, Error> {
    let range = |what: &str| Error::NumericOutOfRange(format!("{what} out of range"));
    Ok(Some(match d {
        Datum::Null => return Ok(None),
        Datum::Bool(b) => vec![*b as u8],
        Datum::Int(i) => match ty {
            SqlType::Int2 => i16::try_from(*i)
                .map_err(|_| range("smallint"))?
                .to_be_bytes()
                .to_vec(),
            SqlType::Int4 => i32::try_from(*i)
                .map_err(|_| range("integer"))?
                .to_be_bytes()
                .to_vec(),
            _ => i.to_be_bytes().to_vec(),
        },
        Datum::Float(f) => match ty {
            SqlType::Float4 => (*f as f32).to_be_bytes().to_vec(),
            _ => f.to_be_bytes().to_vec(),
        },
        Datum::Decimal(x) => x.to_string().into_bytes(),
        Datum::String(s) => s.as_bytes().to_vec(),
        Datum::Bytes(b) => b.clone(),
        Datum::Date(d) => (d.signed_duration_since(pg_epoch()).num_days() as i32)
            .to_be_bytes()
            .to_vec(),
        Datum::Timestamp(t) => (t.and_utc().timestamp_micros() - PG_EPOCH_MICROS)
            .to_be_bytes()
            .to_vec(),
        Datum::TimestampTz(t) => (t.timestamp_micros() - PG_EPOCH_MICROS)
            .to_be_bytes()
            .to_vec(),
        Datum::Interval(i) => {
            let mut v = i.micros.to_be_bytes().to_vec();
            v.extend_from_slice(&i.days.to_be_bytes());
            v.extend_from_slice(&i.months.to_be_bytes());
            v
        }
        Datum::Uuid(u) => u.as_bytes().to_vec(),
        Datum::Json(j) => {
            let mut v = vec![1u8];
            v.extend_from_slice(j.to_string().as_bytes());
            v
        }
    }))
}

fn bad(ty: &Type) -> Error {
    Error::InvalidTextRepresentation(format!("invalid binary value for a parameter of type {ty}"))
}

/// Decodes one Bind parameter.
pub fn decode_param(raw: &[u8], ty: &Type, binary: bool) -> Result<Datum, Error> {
    let sql_ty = SqlType::from_oid(ty.oid());
    if !binary {
        let s = std::str::from_utf8(raw).map_err(|_| bad(ty))?.to_string();
        return match sql_ty {
            Some(t) if !t.is_string() => bini_sql::cast(Datum::String(s), &t),
            _ => Ok(Datum::String(s)),
        };
    }
    let fixed = |n: usize| -> Result<&[u8], Error> {
        if raw.len() == n {
            Ok(raw)
        } else {
            Err(bad(ty))
        }
    };
    Ok(match sql_ty {
        Some(SqlType::Bool) => Datum::Bool(fixed(1)?[0] != 0),
        Some(SqlType::Int2) => {
            Datum::Int(i16::from_be_bytes(fixed(2)?.try_into().map_err(|_| bad(ty))?) as i64)
        }
        Some(SqlType::Int4) => {
            Datum::Int(i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad(ty))?) as i64)
        }
        Some(SqlType::Int8) => Datum::Int(i64::from_be_bytes(
            fixed(8)?.try_into().map_err(|_| bad(ty))?,
        )),
        Some(SqlType::Float4) => {
            Datum::Float(f32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad(ty))?) as f64)
        }
        Some(SqlType::Float8) => Datum::Float(f64::from_be_bytes(
            fixed(8)?.try_into().map_err(|_| bad(ty))?,
        )),
        Some(SqlType::Decimal { .. }) => Datum::Decimal(
            rust_decimal::Decimal::from_sql(&Type::NUMERIC, raw).map_err(|_| bad(ty))?,
        ),
        Some(SqlType::String { .. }) | None => {
            Datum::String(String::from_utf8(raw.to_vec()).map_err(|_| bad(ty))?)
        }
        Some(SqlType::Bytes) => Datum::Bytes(raw.to_vec()),
        Some(SqlType::Date) => {
            let days = i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad(ty))?);
            Datum::Date(
                pg_epoch()
                    .checked_add_signed(chrono::Duration::days(days as i64))
                    .ok_or_else(|| bad(ty))?,
            )
        }
        Some(t @ (SqlType::Timestamp | SqlType::TimestampTz)) => {
            let us = i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad(ty))?);
            let dt = us
                .checked_add(PG_EPOCH_MICROS)
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| bad(ty))?;
            if t == SqlType::Timestamp {
                Datum::Timestamp(dt.naive_utc())
            } else {
                Datum::TimestampTz(dt)
            }
        }
        Some(SqlType::Interval) => {
            let b = fixed(16)?;
            Datum::Interval(Interval {
                micros: i64::from_be_bytes(b[..8].try_into().map_err(|_| bad(ty))?),
                days: i32::from_be_bytes(b[8..12].try_into().map_err(|_| bad(ty))?),
                months: i32::from_be_bytes(b[12..].try_into().map_err(|_| bad(ty))?),
            })
        }
        Some(SqlType::Uuid) => bini_sql::cast(Datum::Bytes(fixed(16)?.to_vec()), &SqlType::Uuid)?,
        Some(SqlType::Jsonb) => {
            let text = if ty.oid() == 3802 {
                raw.get(1..).ok_or_else(|| bad(ty))?
            } else {
                raw
            };
            bini_sql::cast(
                Datum::String(String::from_utf8(text.to_vec()).map_err(|_| bad(ty))?),
                &SqlType::Jsonb,
            )?
        }
        Some(SqlType::Unknown) => {
            Datum::String(String::from_utf8(raw.to_vec()).map_err(|_| bad(ty))?)
        }
    })
}
