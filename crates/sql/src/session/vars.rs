//! Session variables: what `SET`, `SET LOCAL`, `RESET`, `SHOW` and `SHOW ALL` accept.
//!
//! Every variable bini knows is in [`VARS`] with its default and a check that turns a value
//! the client wrote into the canonical one bini honours, or refuses it: a variable bini cannot
//! honour at a value (a time zone other than UTC, a non-ISO date style) fails with SQLSTATE
//! 22023 or 0A000 and keeps its old value; an unknown variable fails with 42704, as in
//! Postgres. Nothing is stored that has no effect.
//!
//! Isolation levels are the exception that is not refused: bini runs every transaction
//! SERIALIZABLE, which gives every guarantee a weaker level promises (the SQL standard lets
//! an implementation run a transaction at a stronger level than asked; CockroachDB does the
//! same), so the levels are accepted and `transaction_isolation` reads `serializable`.

use std::time::Duration;

use crate::error::{Error, Result};

/// One session variable.
pub(super) struct Var {
    /// Its name, lower case.
    pub name: &'static str,
    /// Its value in a new session.
    pub default: &'static str,
    /// What `SHOW ALL` says of it.
    pub description: &'static str,
    /// The canonical form of a value, or why it is refused.
    check: fn(&str) -> Result<String>,
}

/// The variables, by name.
pub(super) const VARS: &[Var] = &[
    Var {
        name: "application_name",
        default: "",
        description: "the client's name, shown in bini_internal.sessions",
        check: any_text,
    },
    Var {
        name: "bytea_output",
        default: "hex",
        description: "the text format of BYTEA values (hex only)",
        check: |v| only(v, "bytea_output", &["hex"]),
    },
    Var {
        name: "client_encoding",
        default: "UTF8",
        description: "the client's character set (UTF8 only)",
        check: |v| match v.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "utf8" | "unicode" => Ok("UTF8".into()),
            _ => Err(unsupported("client_encoding", v, "UTF8")),
        },
    },
    Var {
        name: "client_min_messages",
        default: "notice",
        description: "the least severe message sent to the client",
        check: |v| {
            only(
                v,
                "client_min_messages",
                &[
                    "debug5", "debug4", "debug3", "debug2", "debug1", "debug", "log", "notice",
                    "warning", "error",
                ],
            )
        },
    },
    Var {
        name: "datestyle",
        default: "ISO, MDY",
        description: "the output format of dates (ISO only)",
        check: |v| {
            let parts: Vec<String> = v
                .split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .collect();
            let iso = parts.iter().any(|p| p == "iso");
            let others_ok = parts
                .iter()
                .all(|p| ["iso", "mdy", "us"].contains(&p.as_str()));
            if iso && others_ok {
                Ok("ISO, MDY".into())
            } else {
                Err(unsupported("DateStyle", v, "ISO, MDY"))
            }
        },
    },
    Var {
        name: "default_transaction_isolation",
        default: "serializable",
        description: "the isolation of new transactions (every level runs SERIALIZABLE)",
        check: isolation,
    },
    Var {
        name: "default_transaction_read_only",
        default: "off",
        description: "whether new transactions are read-only",
        check: boolean,
    },
    Var {
        name: "extra_float_digits",
        default: "1",
        description: "float output precision (1 to 3: the shortest exact form)",
        check: |v| match v.trim().parse::<i32>() {
            Ok(n @ 1..=3) => Ok(n.to_string()),
            Ok(_) => Err(Error::FeatureNotSupported(format!(
                "extra_float_digits = {v}: floats are always written in their shortest exact \
                 form (1 to 3)"
            ))),
            Err(_) => Err(Error::InvalidParameterValue(format!(
                "invalid value for parameter \"extra_float_digits\": \"{v}\""
            ))),
        },
    },
    Var {
        name: "idle_in_transaction_session_timeout",
        default: "0",
        description: "close a session idle in a transaction for longer (0: never)",
        check: |v| duration(v, "idle_in_transaction_session_timeout"),
    },
    Var {
        name: "intervalstyle",
        default: "postgres",
        description: "the output format of intervals (postgres only)",
        check: |v| only(v, "IntervalStyle", &["postgres"]),
    },
    Var {
        name: "lock_timeout",
        default: "0",
        description: "how long a statement waits for a lock (0: as long as it takes)",
        check: |v| match duration(v, "lock_timeout")?.as_str() {
            "0" => Ok("0".into()),
            _ => Err(Error::FeatureNotSupported(
                "lock_timeout other than 0 (use statement_timeout)".into(),
            )),
        },
    },
    Var {
        name: "search_path",
        default: "public",
        description: "the schemas names are looked up in (public only)",
        check: |v| {
            let ok = v.split(',').map(|s| s.trim().trim_matches('"')).all(|s| {
                ["public", "$user", "pg_catalog", ""].contains(&s.to_ascii_lowercase().as_str())
            });
            if ok {
                Ok(v.trim().to_string())
            } else {
                Err(Error::FeatureNotSupported(format!(
                    "search_path = {v}: bini has the schema public only"
                )))
            }
        },
    },
    Var {
        name: "standard_conforming_strings",
        default: "on",
        description: "backslashes in ordinary strings are literal (on only)",
        check: |v| match boolean(v)?.as_str() {
            "on" => Ok("on".into()),
            _ => Err(unsupported("standard_conforming_strings", v, "on")),
        },
    },
    Var {
        name: "statement_timeout",
        default: "0",
        description: "cancel a statement running longer (0: never)",
        check: |v| duration(v, "statement_timeout"),
    },
    Var {
        name: "timezone",
        default: "UTC",
        description: "the session's time zone (UTC only)",
        check: |v| {
            let utc = [
                "utc",
                "etc/utc",
                "gmt",
                "etc/gmt",
                "z",
                "zulu",
                "uct",
                "universal",
                "0",
                "+0",
                "-0",
                "00:00",
                "+00",
                "+00:00",
                "-00",
            ];
            if utc.contains(&v.trim().to_ascii_lowercase().as_str()) {
                Ok("UTC".into())
            } else {
                Err(unsupported("TimeZone", v, "UTC"))
            }
        },
    },
    Var {
        name: "transaction_isolation",
        default: "serializable",
        description: "the isolation of the current transaction (every level runs SERIALIZABLE)",
        check: isolation,
    },
    Var {
        name: "transaction_read_only",
        default: "off",
        description: "whether the current transaction is read-only",
        check: boolean,
    },
];

/// Variables `SHOW` reads that no `SET` changes, with their values.
pub(super) const READ_ONLY: &[(&str, &str)] = &[
    ("integer_datetimes", "on"),
    ("is_superuser", "on"),
    ("max_identifier_length", "63"),
    ("server_encoding", "UTF8"),
    ("server_version", crate::SERVER_VERSION),
    ("server_version_num", "150000"),
];

/// The variable called `name` (any case; `time zone` and `timezone` alike).
pub(super) fn lookup(name: &str) -> Result<&'static Var> {
    let name = canonical_name(name);
    VARS.iter()
        .find(|v| v.name == name)
        .ok_or(Error::UnrecognizedSetting(name))
}

/// A variable's name as [`VARS`] spells it.
pub(super) fn canonical_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "time zone" => "timezone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        _ => n,
    }
}

impl Var {
    /// The canonical form of `value`, or why this variable cannot take it.
    pub fn check(&self, value: &str) -> Result<String> {
        (self.check)(value)
    }
}

/// A duration setting's value as a [`Duration`] (`0` and absent: none).
pub(super) fn as_duration(ms: &str) -> Option<Duration> {
    ms.parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

fn any_text(v: &str) -> Result<String> {
    Ok(v.to_string())
}

fn only(v: &str, name: &str, allowed: &[&str]) -> Result<String> {
    let lower = v.trim().to_ascii_lowercase();
    if allowed.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(unsupported(name, v, &allowed.join(", ")))
    }
}

fn unsupported(name: &str, v: &str, supported: &str) -> Error {
    Error::FeatureNotSupported(format!("{name} = '{v}' (bini supports {supported})"))
}

/// `on`/`off` from any of Postgres's spellings of a boolean.
fn boolean(v: &str) -> Result<String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Ok("on".into()),
        "off" | "false" | "no" | "0" | "f" | "n" => Ok("off".into()),
        _ => Err(Error::InvalidParameterValue(format!(
            "parameter requires a Boolean value, not \"{v}\""
        ))),
    }
}

fn isolation(v: &str) -> Result<String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "serializable" | "repeatable read" | "read committed" | "read uncommitted" | "snapshot" => {
            Ok("serializable".into())
        }
        _ => Err(Error::InvalidParameterValue(format!(
            "invalid value for parameter \"transaction_isolation\": \"{v}\""
        ))),
    }
}

/// A duration in Postgres's notation (a number of milliseconds, or a number and a unit:
/// `5s`, `1 min`, `250ms`) as milliseconds.
fn duration(v: &str, name: &str) -> Result<String> {
    let t = v.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || Error::InvalidParameterValue(format!("invalid value for parameter \"{name}\": \"{v}\""));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let per_unit = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(bad()),
    };
    let ms = n * per_unit;
    // Postgres's limit: INT_MAX milliseconds.
    if !(0.0..=i32::MAX as f64).contains(&ms) {
        return Err(Error::InvalidParameterValue(format!(
            "{v} is outside the valid range for parameter \"{name}\" (0 .. 2147483647)"
        )));
    }
    Ok((ms.round() as u64).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, v: &str) -> Result<String> {
        lookup(name)?.check(v)
    }

    #[test]
    fn values_are_canonical_or_refused() {
        assert_eq!(set("statement_timeout", "5s").expect("5s"), "5000");
        assert_eq!(set("statement_timeout", "250").expect("ms"), "250");
        assert_eq!(set("STATEMENT_TIMEOUT", "1 min").expect("min"), "60000");
        assert!(set("statement_timeout", "soon").is_err());
        assert!(set("statement_timeout", "-1").is_err());
        assert_eq!(set("time zone", "Etc/UTC").expect("utc"), "UTC");
        assert!(matches!(
            set("timezone", "Europe/Paris"),
            Err(Error::FeatureNotSupported(_))
        ));
        assert_eq!(
            set("transaction_isolation", "read committed").expect("upgraded"),
            "serializable"
        );
        assert_eq!(
            set("default_transaction_read_only", "true").expect("on"),
            "on"
        );
        assert_eq!(set("client_encoding", "utf-8").expect("utf8"), "UTF8");
        assert!(set("client_encoding", "latin1").is_err());
        assert!(matches!(
            set("no_such_setting", "1"),
            Err(Error::UnrecognizedSetting(_))
        ));
        assert_eq!(as_duration("0"), None);
        assert_eq!(as_duration("1500"), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn every_default_passes_its_own_check() {
        for v in VARS {
            assert_eq!(v.check(v.default).expect(v.name), v.default, "{}", v.name);
        }
    }
}
