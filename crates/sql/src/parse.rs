//! Statement text to [`Parsed`] statements.
//!
//! `sqlparser` (PostgreSQL dialect) parses; two CockroachDB forms it does not know are handled
//! on the tokens first: `UPSERT INTO …` becomes `INSERT INTO …` with a flag, and an
//! `AS OF SYSTEM TIME <value>` clause (after FROM's tables, or after BEGIN) is lifted out of
//! the statement and kept beside it.

use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

use crate::error::{Error, Result};
use crate::functions::parse_interval;
use crate::nesting::{normalize, PARSER_RECURSION_LIMIT, SHALLOW_TOKENS};
use crate::types::Datum;

/// One statement and what its text said around it.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The statement.
    pub stmt: ast::Statement,
    /// Written as `UPSERT`: INSERT that updates the row when its primary key exists.
    pub upsert: bool,
    /// Its `AS OF SYSTEM TIME` clause.
    pub as_of: Option<AsOf>,
    /// Its text in canonical form (the first 2,000 bytes), for `bini_internal.sessions` and
    /// `bini_internal.statements`.
    pub text: String,
}

impl Parsed {
    /// A statement with nothing around it.
    pub fn plain(stmt: ast::Statement) -> Self {
        Parsed {
            text: String::new(),
            stmt,
            upsert: false,
            as_of: None,
        }
    }
}

/// The value of an `AS OF SYSTEM TIME` clause, resolved against the statement's clock.
#[derive(Clone, Debug, PartialEq)]
pub enum AsOf {
    /// A timestamp (`'2026-11-24 10:00:00'`) or a negative interval from now (`'-5s'`).
    Text(String),
    /// Nanoseconds since the Unix epoch, as CockroachDB prints HLC timestamps.
    Nanos(String),
    /// `follower_read_timestamp()`: a time far enough back to be closed everywhere.
    FollowerRead,
}

/// How far back `follower_read_timestamp()` reads.
const FOLLOWER_READ_LAG_NANOS: u64 = 4_800_000_000;

impl AsOf {
    /// The timestamp (nanoseconds since the epoch) given `now`; never in the future.
    pub fn resolve(&self, now_nanos: u64) -> Result<u64> {
        let ts = match self {
            AsOf::FollowerRead => now_nanos.saturating_sub(FOLLOWER_READ_LAG_NANOS),
            AsOf::Nanos(n) => {
                let whole = n.split('.').next().unwrap_or_default();
                whole.parse::<u64>().map_err(|_| bad_as_of(n))?
            }
            AsOf::Text(s) if s.trim_start().starts_with('-') => {
                let iv = parse_interval(s).map_err(|_| bad_as_of(s))?;
                if iv.months != 0 {
                    return Err(bad_as_of(s));
                }
                let back = (iv.days as i128) * 86_400_000_000_000 + (iv.micros as i128) * 1000;
                u64::try_from(now_nanos as i128 + back).map_err(|_| bad_as_of(s))?
            }
            AsOf::Text(s) => {
                let Datum::TimestampTz(t) =
                    crate::expr::cast(Datum::String(s.clone()), &crate::types::Type::TimestampTz)
                        .map_err(|_| bad_as_of(s))?
                else {
                    return Err(bad_as_of(s));
                };
                t.timestamp_nanos_opt()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| bad_as_of(s))?
            }
        };
        if ts > now_nanos {
            return Err(Error::InvalidParameterValue(
                "AS OF SYSTEM TIME: cannot specify a timestamp in the future".into(),
            ));
        }
        Ok(ts)
    }
}

fn bad_as_of(v: &str) -> Error {
    Error::InvalidParameterValue(format!(
        "AS OF SYSTEM TIME: {v:?} is not a timestamp, a negative interval or nanoseconds"
    ))
}

fn is_word(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(Word { value, quote_style: None, .. })) if value.eq_ignore_ascii_case(kw))
}

/// `SHOW RANGES FROM TABLE [db.][public.]t` at `tokens[i]` (the SHOW): the query over
/// `bini_internal.ranges` it stands for, and where the statement ends.
fn show_ranges(tokens: &[Token], i: usize) -> Result<Option<(String, usize)>> {
    let mut words = tokens[i + 1..]
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t, Token::Whitespace(_)));
    for kw in ["ranges", "from", "table"] {
        match words.next() {
            Some((_, t)) if is_word(Some(t), kw) => {}
            _ => return Ok(None),
        }
    }
    let mut parts = Vec::new();
    let mut end = tokens.len();
    for (k, t) in words {
        match t {
            Token::Word(w) if w.quote_style.is_some() => parts.push(w.value.clone()),
            Token::Word(w) => parts.push(w.value.to_lowercase()),
            Token::Period => {}
            Token::SemiColon => {
                end = i + 1 + k;
                break;
            }
            other => return Err(Error::Syntax(format!("unexpected {other} in SHOW RANGES"))),
        }
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let (db, table, target) = match parts.as_slice() {
        [t] => ("current_database()".to_string(), quote(t), ident(t)),
        [d, s, t] if s == "public" => (quote(d), quote(t), format!("{}.{}", ident(d), ident(t))),
        [s, t] if s == "public" => ("current_database()".to_string(), quote(t), ident(t)),
        [d, t] => (quote(d), quote(t), format!("{}.{}", ident(d), ident(t))),
        _ => {
            return Err(Error::Syntax(
                "SHOW RANGES FROM TABLE needs a table name".into(),
            ))
        }
    };
    // The NOT EXISTS reads nothing; naming the table makes a missing one fail with 42P01.
    Ok(Some((
        format!(
            "SELECT start_key, end_key, range_id, replicas, lease_holder \
             FROM bini_internal.ranges WHERE database_name = {db} AND table_name = {table} \
             AND NOT EXISTS (SELECT 1 FROM {target} LIMIT 0)"
        ),
        end,
    )))
}

/// For `COPY … FROM STDIN <options>` at `tokens[i]`: the position of STDIN and where the
/// statement ends. Options other than text format and FREEZE are refused.
fn copy_options(tokens: &[Token], i: usize) -> Result<Option<(usize, usize)>> {
    let end = tokens[i..]
        .iter()
        .position(|t| *t == Token::SemiColon)
        .map_or(tokens.len(), |p| i + p);
    let Some(stdin) = (i..end).find(|k| is_word(tokens.get(*k), "stdin")) else {
        return Ok(None);
    };
    if !is_word(
        tokens[..stdin]
            .iter()
            .rev()
            .find(|t| !matches!(t, Token::Whitespace(_))),
        "from",
    ) {
        return Ok(None);
    }
    for t in &tokens[stdin + 1..end] {
        let allowed = match t {
            Token::Whitespace(_) | Token::LParen | Token::RParen | Token::Comma => true,
            Token::Word(w) => ["with", "format", "text", "freeze", "on", "true", "false"]
                .iter()
                .any(|k| w.value.eq_ignore_ascii_case(k)),
            _ => false,
        };
        if !allowed {
            return Err(Error::FeatureNotSupported(format!(
                "COPY option {t} (only the text format is supported)"
            )));
        }
    }
    Ok(Some((stdin, end)))
}

/// The longest statement text accepted (a Postgres message carries at most 1 GiB; bini
/// refuses past this rather than hold and parse it).
pub const MAX_STATEMENT_BYTES: usize = 16 << 20;

/// How much of a statement's text is kept for `bini_internal.sessions` and `statements`.
const TEXT_KEPT: usize = 2000;

/// Parses a string of statements.
///
/// The text is tokenized once; the token scan lifts out what sqlparser does not know
/// (`UPSERT`, `AS OF SYSTEM TIME`, `SHOW RANGES`, COPY options) and the parser then reads the
/// scanned tokens. Long statements are balanced and depth-checked (`nesting.rs`).
pub fn parse(sql: &str) -> Result<Vec<Parsed>> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(Error::ProgramLimitExceeded(format!(
            "statement of {} bytes is longer than the {MAX_STATEMENT_BYTES}-byte limit",
            sql.len()
        )));
    }
    let dialect = PostgreSqlDialect {};
    let spanned = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| Error::Syntax(e.to_string()))?;
    let tokens: Vec<Token> = spanned.iter().map(|t| t.token.clone()).collect();
    // Per statement (split at semicolons, empty ones skipped as the parser skips them).
    let mut meta: Vec<(bool, Option<AsOf>)> = Vec::new();
    let (mut upsert, mut as_of, mut content) = (false, None, false);
    let mut kept: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let keep = |kept: &mut Vec<TokenWithSpan>, i: usize| kept.push(spanned[i].clone());
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match t {
            Token::SemiColon => {
                if content {
                    meta.push((upsert, as_of.take()));
                }
                (upsert, content) = (false, false);
            }
            Token::Whitespace(_) => {}
            _ if !content && is_word(Some(t), "show") => {
                if let Some((sql, end)) = show_ranges(&tokens, i)? {
                    let replacement = Tokenizer::new(&dialect, &sql)
                        .tokenize_with_location()
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    kept.extend(replacement);
                    (content, i) = (true, end);
                    continue;
                }
                content = true;
            }
            _ if !content && is_word(Some(t), "vacuum") => {
                // Postgres's `VACUUM [FULL] [FREEZE] [VERBOSE] [ANALYZE] [table]`: MVCC garbage
                // is collected by the GC queue, so this is a no-op; the flags are dropped so
                // the parser sees `VACUUM table`.
                keep(&mut kept, i);
                i += 1;
                while i < tokens.len()
                    && (matches!(tokens[i], Token::Whitespace(_))
                        || ["full", "freeze", "verbose", "analyze", "analyse"]
                            .iter()
                            .any(|k| is_word(tokens.get(i), k)))
                {
                    i += 1;
                }
                kept.push(TokenWithSpan::wrap(Token::Whitespace(
                    sqlparser::tokenizer::Whitespace::Space,
                )));
                content = true;
                continue;
            }
            _ if !content && is_word(Some(t), "copy") => {
                // `COPY … FROM STDIN [WITH] (FORMAT text, FREEZE …)`: the options the text
                // format needs are dropped here (sqlparser does not know all of them).
                if let Some((stdin, end)) = copy_options(&tokens, i)? {
                    kept.extend(spanned[i..=stdin].iter().cloned());
                    (content, i) = (true, end);
                    continue;
                }
                content = true;
            }
            _ if !content && is_word(Some(t), "upsert") => {
                content = true;
                upsert = true;
                kept.push(TokenWithSpan::new(
                    Token::make_keyword("INSERT"),
                    spanned[i].span,
                ));
                i += 1;
                continue;
            }
            _ if is_word(Some(t), "as") => {
                // AS OF SYSTEM TIME <value>: words separated by whitespace.
                let words: Vec<(usize, &Token)> = tokens[i + 1..]
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| !matches!(t, Token::Whitespace(_)))
                    .take(4)
                    .map(|(k, t)| (i + 1 + k, t))
                    .collect();
                let clause = words.len() == 4
                    && is_word(Some(words[0].1), "of")
                    && is_word(Some(words[1].1), "system")
                    && is_word(Some(words[2].1), "time");
                if clause {
                    let (at, value) = words[3];
                    let (v, end) = match value {
                        Token::SingleQuotedString(s) => (AsOf::Text(s.clone()), at + 1),
                        Token::Number(n, _) => (AsOf::Nanos(n.clone()), at + 1),
                        Token::Word(w)
                            if w.value.eq_ignore_ascii_case("follower_read_timestamp")
                                && tokens.get(at + 1) == Some(&Token::LParen)
                                && tokens.get(at + 2) == Some(&Token::RParen) =>
                        {
                            (AsOf::FollowerRead, at + 3)
                        }
                        other => {
                            return Err(Error::Syntax(format!(
                                "AS OF SYSTEM TIME takes a string, a number or \
                                 follower_read_timestamp(), not {other}"
                            )))
                        }
                    };
                    if as_of.is_some() {
                        return Err(Error::Syntax("AS OF SYSTEM TIME given twice".into()));
                    }
                    as_of = Some(v);
                    kept.push(TokenWithSpan::wrap(Token::Whitespace(
                        sqlparser::tokenizer::Whitespace::Space,
                    )));
                    i = end;
                    continue;
                }
                content = true;
            }
            _ => content = true,
        }
        keep(&mut kept, i);
        i += 1;
    }
    if content {
        meta.push((upsert, as_of.take()));
    }
    let deep = tokens.len() > SHALLOW_TOKENS;
    let stmts = sqlparser::parser::Parser::new(&dialect)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .with_tokens_with_locations(kept)
        .parse_statements()?;
    let stmts = if deep {
        stmts
            .into_iter()
            .map(normalize)
            .collect::<Result<Vec<_>>>()?
    } else {
        stmts
    };
    if stmts.len() != meta.len() {
        // The parser and the token scan disagree on where statements end; the clauses
        // cannot be placed safely.
        if meta.iter().any(|(u, a)| *u || a.is_some()) {
            return Err(Error::Syntax(
                "cannot place UPSERT or AS OF SYSTEM TIME in this statement list".into(),
            ));
        }
        return Ok(stmts
            .into_iter()
            .map(|stmt| Parsed {
                text: rendered(&stmt),
                ..Parsed::plain(stmt)
            })
            .collect());
    }
    Ok(stmts
        .into_iter()
        .zip(meta.iter().cloned())
        .map(|(stmt, (upsert, as_of))| Parsed {
            text: rendered(&stmt),
            stmt,
            upsert,
            as_of,
        })
        .collect())
}

/// The first [`TEXT_KEPT`] bytes of a statement rendered in its canonical form (keywords in
/// capitals, one space between tokens), so that statistics group a statement however it was
/// spelt. Rendering stops there: a 100,000-term statement is not rendered whole.
fn rendered(stmt: &ast::Statement) -> String {
    struct Capped(String);
    impl std::fmt::Write for Capped {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = TEXT_KEPT - self.0.len();
            if s.len() <= room {
                self.0.push_str(s);
                return Ok(());
            }
            let cut = (0..=room)
                .rev()
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0);
            self.0.push_str(&s[..cut]);
            Err(std::fmt::Error)
        }
    }
    let mut out = Capped(String::new());
    // An error here only means the cap was reached.
    let _ = std::fmt::write(&mut out, format_args!("{stmt}"));
    out.0
}

/// Parses one statement for the extended protocol (`None` for an empty string).
pub fn parse_one(sql: &str) -> Result<Option<Parsed>> {
    let mut stmts = parse(sql)?;
    if stmts.len() > 1 {
        return Err(Error::Syntax(
            "cannot insert multiple commands into a prepared statement".into(),
        ));
    }
    Ok(stmts.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_and_as_of_are_lifted_per_statement() {
        let p = parse(
            "upsert into t values (1); select * from t as of system time '-5s' where k = 1;; \
             select 'as of system time' as x",
        )
        .expect("parses");
        assert_eq!(p.len(), 3);
        assert!(p[0].upsert && p[0].as_of.is_none());
        assert!(matches!(p[0].stmt, ast::Statement::Insert(_)));
        assert_eq!(p[1].as_of, Some(AsOf::Text("-5s".into())));
        assert!(!p[1].upsert);
        assert_eq!(
            p[1].stmt.to_string(),
            "SELECT * FROM t WHERE k = 1",
            "the clause is removed"
        );
        assert!(p[2].as_of.is_none(), "a string is not a clause");
        let p = parse("begin as of system time follower_read_timestamp()").expect("parses");
        assert_eq!(p[0].as_of, Some(AsOf::FollowerRead));
        assert!(parse("select 1 from t as of system time now").is_err());
    }

    #[test]
    fn statement_text_is_canonical_and_capped() {
        let p = parse("select   1  ; select * from t where k in (1,2)").expect("parses");
        assert_eq!(p[0].text, "SELECT 1");
        assert_eq!(p[1].text, "SELECT * FROM t WHERE k IN (1, 2)");
        let list: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
        let p = parse(&format!("select 1 where 1 in ({})", list.join(","))).expect("parses");
        assert_eq!(p[0].text.len(), 2000);
        assert!(p[0].text.starts_with("SELECT 1 WHERE 1 IN (0, 1, 2"));
    }

    #[test]
    fn rewritten_statements_keep_their_quoted_strings() {
        // UPSERT and AS OF are lifted from the tokens, which go to the parser as they are.
        let p = parse("upsert into t values ('it''s', 'a;b') ").expect("parses");
        assert!(p[0].upsert);
        assert_eq!(p[0].text, "INSERT INTO t VALUES ('it''s', 'a;b')");
        let too_long = "x".repeat(MAX_STATEMENT_BYTES);
        let e = parse(&format!("select '{too_long}'")).expect_err("over the limit");
        assert!(matches!(e, Error::ProgramLimitExceeded(_)), "{e:?}");
    }

    #[test]
    fn copy_options_of_the_text_format_are_dropped() {
        let p = parse("copy pgbench_accounts from stdin with (freeze on)").expect("parses");
        assert!(matches!(
            p[0].stmt,
            ast::Statement::Copy {
                target: ast::CopyTarget::Stdin,
                ..
            }
        ));
        assert!(parse("copy t from stdin with (format csv)").is_err());
    }

    #[test]
    fn as_of_resolves_to_the_past_only() {
        let now = 1_800_000_000_000_000_000u64;
        assert_eq!(
            AsOf::Text("-5s".into()).resolve(now).expect("interval"),
            now - 5_000_000_000
        );
        assert_eq!(
            AsOf::Text("2026-11-24 00:00:00+00".into())
                .resolve(now)
                .expect("timestamp"),
            1_795_478_400_000_000_000
        );
        assert_eq!(
            AsOf::Nanos("1700000000000000000.0000000001".into())
                .resolve(now)
                .expect("nanos"),
            1_700_000_000_000_000_000
        );
        assert!(AsOf::Text("5s".into()).resolve(now).is_err());
        assert!(AsOf::Text("2999-01-01".into()).resolve(now).is_err());
        assert!(AsOf::FollowerRead.resolve(now).expect("follower") < now);
    }
}
