//! The binder and planner: parsed SQL (`sqlparser`'s AST) to a [`Node`] tree with bound
//! [`Expr`]s.
//!
//! Names resolve against a [`Scope`]: the columns of the current input, each with its table
//! alias. After grouping, the scope becomes the aggregate's output and expressions must be
//! group keys or aggregates (matched structurally on the AST, as Postgres does).
//!
//! Rules applied while planning:
//! - a WHERE over a single table becomes the scan's filter, and equality on every primary key
//!   column (`id = 1`, `id IN (1, 2)`) turns the scan into point lookups; else equality on the
//!   leading columns of a secondary index reads that index's entries under those values and
//!   then the rows they name (the index with the most pinned columns wins);
//! - a LIMIT over a filter-only scan without ORDER BY stops the scan early;
//! - joins with equality conditions run as hash joins;
//! - uncorrelated subqueries run once, before the statement, and become constants.
//!
//! Left out for now: correlated subqueries, window functions, index range scans (`<`, `>`),
//! lookup joins.

use std::collections::HashMap;

use sqlparser::ast;

use bini_txn::Txn;

use crate::catalog::{self, TableDesc};
use crate::encoding::encode_key_datum;
use crate::error::{Error, Result};
use crate::expr::{cast, BinOp, Expr};
use crate::functions::Func;
use crate::plan::{
    execute, AggFunc, Aggregate, BoxFuture, Column, JoinKind, Lookup, Node, SetOp, SortKey,
};
use crate::types::{Datum, Type};

/// What a statement is planned against.
pub struct Context<'a> {
    /// The node's database handle (for what lives outside the transaction: ranges).
    pub db: bini_txn::Db,
    /// The node's sessions and statement statistics.
    pub registry: std::sync::Arc<crate::registry::Registry>,
    /// The statement's transaction.
    pub txn: &'a mut Txn,
    /// The session's current database.
    pub database: String,
    /// Values and types of `$1`, `$2`, …; placeholders of unknown type learn it here.
    pub params: Params,
    /// Describe only: bind and plan, but read and write no rows (DML stops before its
    /// scans; queries are planned, not run).
    pub describe: bool,
    /// The statement's timestamp, for `now()`.
    pub now: chrono::DateTime<chrono::Utc>,
    /// Common table expressions in scope: name → (columns, rows).
    pub ctes: Vec<(String, Vec<Column>, Vec<Vec<Datum>>)>,
}

/// The parameters of a statement.
#[derive(Clone, Debug, Default)]
pub struct Params {
    /// Values of `$1`, `$2`, … (absent when only describing).
    pub values: Vec<Datum>,
    /// Their types: declared by the client, or inferred from where each placeholder appears
    /// (`Unknown` until then).
    pub types: Vec<Type>,
}

impl Params {
    /// Values with no declared types.
    pub fn values(values: Vec<Datum>) -> Self {
        Params {
            values,
            types: Vec::new(),
        }
    }

    /// The type of `$n` (0-based `i`), if known.
    pub fn type_of(&self, i: usize) -> Type {
        self.types.get(i).cloned().unwrap_or(Type::Unknown)
    }
}

/// The 0-based index of a `$n` placeholder expression.
fn placeholder_index(e: &ast::Expr) -> Option<usize> {
    match e {
        ast::Expr::Nested(x) => placeholder_index(x),
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Placeholder(p) => p
                .trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1)),
            _ => None,
        },
        _ => None,
    }
}

/// The columns an expression may name.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Input columns.
    pub columns: Vec<Column>,
    /// After grouping: AST expressions (group keys, aggregates) and the column they are.
    pub grouped: Option<Vec<(ast::Expr, usize)>>,
}

impl Scope {
    fn new(columns: Vec<Column>) -> Self {
        Scope {
            columns,
            grouped: None,
        }
    }

    /// Finds a column by name and optional table qualifier.
    fn resolve(&self, table: Option<&str>, name: &str) -> Result<usize> {
        let mut found = None;
        for (i, c) in self.columns.iter().enumerate() {
            if c.name == name && table.is_none_or(|t| c.table.as_deref() == Some(t)) {
                if found.is_some() {
                    return Err(Error::AmbiguousColumn(name.to_string()));
                }
                found = Some(i);
            }
        }
        found.ok_or_else(|| {
            Error::UndefinedColumn(match table {
                Some(t) => format!("{t}.{name}"),
                None => name.to_string(),
            })
        })
    }
}

/// A planned query: the node and its output columns.
pub struct Planned {
    /// The plan.
    pub node: Node,
    /// Output columns.
    pub columns: Vec<Column>,
}

/// Lower-cases unquoted identifiers, as Postgres does.
pub fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The parts of a possibly qualified name.
pub fn name_parts(n: &ast::ObjectName) -> Vec<String> {
    n.0.iter().filter_map(|p| p.as_ident()).map(ident).collect()
}

/// Resolves `[db.][public.]table` to (database, table name).
pub fn table_name(ctx_db: &str, n: &ast::ObjectName) -> Result<(String, String)> {
    let parts = name_parts(n);
    match parts.as_slice() {
        [t] => Ok((ctx_db.to_string(), t.clone())),
        [db_or_schema, t] if db_or_schema == "public" => Ok((ctx_db.to_string(), t.clone())),
        [db, t] => Ok((db.clone(), t.clone())),
        [db, s, t] if s == "public" => Ok((db.clone(), t.clone())),
        _ => Err(Error::UndefinedTable(n.to_string())),
    }
}

/// Looks a table up, or fails naming it.
pub async fn must_table(ctx: &mut Context<'_>, n: &ast::ObjectName) -> Result<TableDesc> {
    let (db, t) = table_name(&ctx.database, n)?;
    let Some(dbd) = catalog::database(ctx.txn, &db).await? else {
        return Err(Error::UndefinedTable(n.to_string()));
    };
    catalog::table(ctx.txn, dbd.id, &t)
        .await?
        .ok_or_else(|| Error::UndefinedTable(n.to_string()))
}

/// Converts a declared SQL type.
pub fn sql_type(dt: &ast::DataType) -> Result<Type> {
    use ast::DataType as D;
    let len = |l: &Option<ast::CharacterLength>| match l {
        Some(ast::CharacterLength::IntegerLength { length, .. }) => Some(*length as u32),
        _ => None,
    };
    let decimal = |info: &ast::ExactNumberInfo| -> Result<Type> {
        let (precision, scale) = match info {
            ast::ExactNumberInfo::None => (None, None),
            ast::ExactNumberInfo::Precision(p) => (Some(*p as u32), Some(0)),
            ast::ExactNumberInfo::PrecisionAndScale(p, s) => (Some(*p as u32), Some(*s as u32)),
        };
        if precision.is_some_and(|p| p == 0 || p > 28) {
            return Err(Error::InvalidParameterValue(
                "NUMERIC precision must be between 1 and 28".into(),
            ));
        }
        if scale > precision {
            return Err(Error::InvalidParameterValue(
                "NUMERIC scale must not exceed its precision".into(),
            ));
        }
        Ok(Type::Decimal { precision, scale })
    };
    Ok(match dt {
        D::Bool | D::Boolean => Type::Bool,
        D::SmallInt(_) | D::Int2(_) => Type::Int2,
        D::Int4(_) => Type::Int4,
        D::Integer(_) => Type::Int4,
        // CockroachDB's choice: INT is 64 bits.
        D::Int(_) | D::BigInt(_) | D::Int8(_) => Type::Int8,
        D::Real | D::Float4 => Type::Float4,
        D::DoublePrecision | D::Float8 | D::Double(_) => Type::Float8,
        D::Float(ast::ExactNumberInfo::Precision(p)) if *p <= 24 => Type::Float4,
        D::Float(_) => Type::Float8,
        D::Numeric(i) | D::Decimal(i) | D::Dec(i) => decimal(i)?,
        D::Varchar(l) | D::CharacterVarying(l) | D::CharVarying(l) => Type::String {
            max_len: len(l),
            fixed: false,
        },
        D::Char(l) | D::Character(l) => Type::String {
            max_len: Some(len(l).unwrap_or(1)),
            fixed: true,
        },
        D::Text | D::String(_) => Type::TEXT,
        D::Bytea => Type::Bytes,
        D::Date => Type::Date,
        D::Timestamp(_, ast::TimezoneInfo::Tz | ast::TimezoneInfo::WithTimeZone) => {
            Type::TimestampTz
        }
        D::Timestamp(_, _) => Type::Timestamp,
        D::Interval { .. } => Type::Interval,
        D::Uuid => Type::Uuid,
        D::JSONB | D::JSON => Type::Jsonb,
        D::Custom(name, _) => {
            let n = name.to_string().to_lowercase();
            match n.as_str() {
                "serial" | "serial8" | "bigserial" | "int64" => Type::Int8,
                "serial4" => Type::Int4,
                "serial2" | "smallserial" => Type::Int2,
                "string" => Type::TEXT,
                "bytes" => Type::Bytes,
                "timestamptz" => Type::TimestampTz,
                "float" => Type::Float8,
                _ => return Err(Error::FeatureNotSupported(format!("type {name}"))),
            }
        }
        other => return Err(Error::FeatureNotSupported(format!("type {other}"))),
    })
}

/// Whether a declared type is SERIAL (a column filled with unique ids by default).
pub fn is_serial(dt: &ast::DataType) -> bool {
    matches!(dt, ast::DataType::Custom(name, _)
        if name.to_string().to_lowercase().contains("serial"))
}

fn literal(v: &ast::Value) -> Result<Expr> {
    use ast::Value as V;
    Ok(Expr::Literal(match v {
        V::Number(s, _) => {
            if let Ok(i) = s.parse::<i64>() {
                Datum::Int(i)
            } else if s.contains(['e', 'E']) {
                Datum::Float(
                    s.parse()
                        .map_err(|_| Error::Syntax(format!("bad number {s}")))?,
                )
            } else {
                Datum::Decimal(crate::expr::parse_decimal(s)?)
            }
        }
        V::SingleQuotedString(s)
        | V::EscapedStringLiteral(s)
        | V::UnicodeStringLiteral(s)
        | V::NationalStringLiteral(s)
        | V::TripleSingleQuotedString(s)
        | V::DoubleQuotedString(s) => Datum::String(s.clone()),
        V::DollarQuotedString(d) => Datum::String(d.value.clone()),
        V::HexStringLiteral(h) => Datum::Bytes(crate::expr::parse_bytea(&format!("\\x{h}"))?),
        V::Boolean(b) => Datum::Bool(*b),
        V::Null => Datum::Null,
        other => return Err(Error::FeatureNotSupported(format!("literal {other}"))),
    }))
}

/// The type of a bound expression, given its input columns.
pub fn type_of(e: &Expr, cols: &[Column]) -> Type {
    match e {
        Expr::Literal(d) => d.natural_type(),
        Expr::Column(i) => cols.get(*i).map(|c| c.ty.clone()).unwrap_or(Type::Unknown),
        Expr::Binary(op, l, r) => {
            let (a, b) = (type_of(l, cols), type_of(r, cols));
            match op {
                BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
                    Type::Bool
                }
                BinOp::Concat => {
                    if a == Type::Bytes {
                        Type::Bytes
                    } else if a == Type::Jsonb {
                        Type::Jsonb
                    } else {
                        Type::TEXT
                    }
                }
                BinOp::JsonGet => Type::Jsonb,
                BinOp::JsonGetText => Type::TEXT,
                _ => arith_type(&a, &b, *op),
            }
        }
        Expr::Neg(e) => type_of(e, cols),
        Expr::Not(_)
        | Expr::And(..)
        | Expr::Or(..)
        | Expr::IsNull(..)
        | Expr::IsDistinct(..)
        | Expr::InList(..)
        | Expr::Like { .. } => Type::Bool,
        Expr::Cast(_, t) => t.clone(),
        Expr::Case {
            whens, otherwise, ..
        } => whens
            .iter()
            .map(|(_, r)| type_of(r, cols))
            .chain(otherwise.iter().map(|o| type_of(o, cols)))
            .find(|t| *t != Type::Unknown)
            .unwrap_or(Type::Unknown),
        Expr::Call(f, args) => {
            let ts: Vec<Type> = args.iter().map(|a| type_of(a, cols)).collect();
            f.return_type(&ts)
        }
    }
}

fn arith_type(a: &Type, b: &Type, op: BinOp) -> Type {
    use Type::*;
    match (a, b) {
        (Date, Interval) | (Interval, Date) => Timestamp,
        (Date, Int8 | Int4 | Int2) => Date,
        (Date, Date) => Int8,
        (Timestamp, Timestamp) | (TimestampTz, TimestampTz) => Interval,
        (Timestamp, _) | (_, Timestamp) => Timestamp,
        (TimestampTz, _) | (_, TimestampTz) => TimestampTz,
        (Interval, _) => Interval,
        (Float4 | Float8, _) | (_, Float4 | Float8) => Float8,
        (Decimal { .. }, _) | (_, Decimal { .. }) => Decimal {
            precision: None,
            scale: None,
        },
        (x, y) if x.is_int() && y.is_int() => Int8,
        (Unknown, t) | (t, Unknown) if op != BinOp::Div => t.clone(),
        _ => Unknown,
    }
}

fn aggregate_func(name: &str) -> Option<AggFunc> {
    Some(match name {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "string_agg" => AggFunc::StringAgg,
        "bool_and" | "every" => AggFunc::BoolAnd,
        "bool_or" => AggFunc::BoolOr,
        _ => return None,
    })
}

fn is_aggregate_call(e: &ast::Expr) -> bool {
    matches!(e, ast::Expr::Function(f) if f.over.is_none()
        && aggregate_func(&f.name.to_string().to_lowercase()).is_some())
}

/// Collects the aggregate calls in an expression (not looking into subqueries).
fn collect_aggregates(e: &ast::Expr, out: &mut Vec<ast::Expr>) {
    use ast::Expr as E;
    if is_aggregate_call(e) {
        if !out.contains(e) {
            out.push(e.clone());
        }
        return;
    }
    match e {
        E::BinaryOp { left, right, .. } => {
            collect_aggregates(left, out);
            collect_aggregates(right, out);
        }
        E::UnaryOp { expr, .. }
        | E::Nested(expr)
        | E::IsNull(expr)
        | E::IsNotNull(expr)
        | E::IsTrue(expr)
        | E::IsFalse(expr)
        | E::Cast { expr, .. } => collect_aggregates(expr, out),
        E::Between {
            expr, low, high, ..
        } => {
            collect_aggregates(expr, out);
            collect_aggregates(low, out);
            collect_aggregates(high, out);
        }
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            if let Some(o) = operand {
                collect_aggregates(o, out);
            }
            for c in conditions {
                collect_aggregates(&c.condition, out);
                collect_aggregates(&c.result, out);
            }
            if let Some(e) = else_result {
                collect_aggregates(e, out);
            }
        }
        E::Function(f) => {
            if let ast::FunctionArguments::List(l) = &f.args {
                for a in &l.args {
                    if let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) = a {
                        collect_aggregates(x, out);
                    }
                }
            }
        }
        E::In {
            expr,
            target: ast::InTarget::List(list),
            ..
        } => {
            collect_aggregates(expr, out);
            list.iter().for_each(|x| collect_aggregates(x, out));
        }
        _ => {}
    }
}

fn const_usize(e: &Expr, what: &str) -> Result<usize> {
    match e.eval(&[])? {
        Datum::Int(i) if i >= 0 => Ok(i as usize),
        Datum::Null => Ok(usize::MAX),
        _ => Err(Error::InvalidParameterValue(format!(
            "{what} must be a non-negative integer"
        ))),
    }
}

impl Context<'_> {
    /// A `$n` placeholder: its value (NULL when describing), typed as declared or inferred.
    fn placeholder(&self, p: &str) -> Result<Expr> {
        let n: usize = p
            .trim_start_matches('$')
            .parse()
            .map_err(|_| Error::Syntax(format!("bad placeholder {p}")))?;
        let i = n.checked_sub(1).ok_or(Error::UndefinedParameter(n))?;
        let value = match self.params.values.get(i) {
            Some(v) => v.clone(),
            None if self.describe => Datum::Null,
            None => return Err(Error::UndefinedParameter(n)),
        };
        match self.params.type_of(i) {
            Type::Unknown => Ok(Expr::Literal(value)),
            ty => fold(Expr::Cast(Box::new(Expr::Literal(value)), ty)),
        }
    }

    /// Records that the placeholder `e` (if it is one, of a type not yet known) is of type
    /// `ty`, as Postgres infers `$1` in `a = $1` from `a`. Lengths and precisions are dropped:
    /// a parameter compared with a VARCHAR(5) may be longer.
    pub fn hint(&mut self, e: &ast::Expr, ty: &Type) {
        let Some(i) = placeholder_index(e) else {
            return;
        };
        // Past the protocol's 16-bit parameter count, `$n` is an error when bound.
        if *ty == Type::Unknown || self.params.type_of(i) != Type::Unknown || i >= 1 << 16 {
            return;
        }
        if self.params.types.len() <= i {
            self.params.types.resize(i + 1, Type::Unknown);
        }
        self.params.types[i] = match ty {
            Type::String { fixed, .. } => Type::String {
                max_len: None,
                fixed: *fixed,
            },
            Type::Decimal { .. } => Type::Decimal {
                precision: None,
                scale: None,
            },
            other => other.clone(),
        };
    }

    /// Binds an expression against a scope.
    pub fn bind<'s>(
        &'s mut self,
        e: &'s ast::Expr,
        scope: &'s Scope,
    ) -> BoxFuture<'s, Result<Expr>> {
        Box::pin(async move { self.bind_inner(e, scope).await })
    }

    async fn bind_inner(&mut self, e: &ast::Expr, scope: &Scope) -> Result<Expr> {
        use ast::Expr as E;
        if let Some(grouped) = &scope.grouped {
            if let Some((_, i)) = grouped.iter().find(|(g, _)| g == e) {
                return Ok(Expr::Column(*i));
            }
            if is_aggregate_call(e) {
                return Err(Error::Grouping(format!("aggregate {e} not found")));
            }
            if let E::Identifier(_) | E::CompoundIdentifier(_) = e {
                // A column that is a group key under another spelling (`t.a` vs `a`).
                let (t, n) = match e {
                    E::Identifier(i) => (None, ident(i)),
                    E::CompoundIdentifier(p) => (
                        p.len().checked_sub(2).map(|i| ident(&p[i])),
                        p.last().map(ident).unwrap_or_default(),
                    ),
                    _ => unreachable!("matched above"),
                };
                for (g, i) in grouped {
                    let gname = match g {
                        E::Identifier(x) => Some((None, ident(x))),
                        E::CompoundIdentifier(p) => Some((
                            p.len().checked_sub(2).map(|i| ident(&p[i])),
                            p.last().map(ident).unwrap_or_default(),
                        )),
                        _ => None,
                    };
                    if let Some((gt, gn)) = gname {
                        if gn == n && (t.is_none() || gt.is_none() || gt == t) {
                            return Ok(Expr::Column(*i));
                        }
                    }
                }
                return Err(Error::Grouping(format!(
                    "column \"{n}\" must appear in the GROUP BY clause or be used in an \
                     aggregate function"
                )));
            }
        } else if is_aggregate_call(e) {
            return Err(Error::Grouping(
                "aggregate functions are not allowed here".into(),
            ));
        }
        let b = |x: Expr| Box::new(x);
        Ok(match e {
            E::Identifier(i) => {
                let name = ident(i);
                match scope.resolve(None, &name) {
                    Ok(c) => Expr::Column(c),
                    Err(err) => match name.as_str() {
                        "current_date" => Expr::Literal(Datum::Date(self.now.date_naive())),
                        "current_timestamp" | "now" => Expr::Literal(Datum::TimestampTz(self.now)),
                        _ => return Err(err),
                    },
                }
            }
            E::CompoundIdentifier(parts) => {
                let names: Vec<String> = parts.iter().map(ident).collect();
                let (t, n) = match names.as_slice() {
                    [t, n] => (t.clone(), n.clone()),
                    [.., t, n] => (t.clone(), n.clone()),
                    _ => return Err(Error::UndefinedColumn(e.to_string())),
                };
                Expr::Column(scope.resolve(Some(&t), &n)?)
            }
            E::Value(ast::ValueWithSpan {
                value: ast::Value::Placeholder(p),
                ..
            }) => self.placeholder(p)?,
            E::Value(v) => literal(&v.value)?,
            E::Nested(x) => self.bind(x, scope).await?,
            E::UnaryOp { op, expr } => {
                let x = self.bind(expr, scope).await?;
                match op {
                    ast::UnaryOperator::Minus => match x {
                        Expr::Literal(Datum::Int(i)) => Expr::Literal(Datum::Int(-i)),
                        Expr::Literal(Datum::Decimal(d)) => Expr::Literal(Datum::Decimal(-d)),
                        x => Expr::Neg(b(x)),
                    },
                    ast::UnaryOperator::Plus => x,
                    ast::UnaryOperator::Not => Expr::Not(b(x)),
                    other => return Err(Error::FeatureNotSupported(format!("operator {other}"))),
                }
            }
            E::BinaryOp { left, op, right } => {
                use ast::BinaryOperator as O;
                let text_op = matches!(
                    op,
                    O::StringConcat
                        | O::PGLikeMatch
                        | O::PGNotLikeMatch
                        | O::PGILikeMatch
                        | O::PGNotILikeMatch
                );
                if text_op {
                    self.hint(left, &Type::TEXT);
                    self.hint(right, &Type::TEXT);
                } else if matches!(op, O::And | O::Or) {
                    self.hint(left, &Type::Bool);
                    self.hint(right, &Type::Bool);
                }
                let mut l = self.bind(left, scope).await?;
                if !matches!(op, O::Arrow | O::LongArrow) && placeholder_index(right).is_some() {
                    self.hint(right, &type_of(&l, &scope.columns));
                }
                let r = self.bind(right, scope).await?;
                if placeholder_index(left).is_some() {
                    // `$1 = a`: rebind the placeholder with the type learnt from the right.
                    self.hint(left, &type_of(&r, &scope.columns));
                    l = self.bind(left, scope).await?;
                }
                let bop = match op {
                    O::And => return Ok(Expr::And(b(l), b(r))),
                    O::Or => return Ok(Expr::Or(b(l), b(r))),
                    O::Plus => BinOp::Add,
                    O::Minus => BinOp::Sub,
                    O::Multiply => BinOp::Mul,
                    O::Divide => BinOp::Div,
                    O::Modulo => BinOp::Mod,
                    O::StringConcat => BinOp::Concat,
                    O::Eq => BinOp::Eq,
                    O::NotEq => BinOp::NotEq,
                    O::Lt => BinOp::Lt,
                    O::LtEq => BinOp::LtEq,
                    O::Gt => BinOp::Gt,
                    O::GtEq => BinOp::GtEq,
                    O::Arrow => BinOp::JsonGet,
                    O::LongArrow => BinOp::JsonGetText,
                    O::PGRegexMatch
                    | O::PGRegexIMatch
                    | O::PGRegexNotMatch
                    | O::PGRegexNotIMatch => {
                        let func = if matches!(op, O::PGRegexMatch | O::PGRegexNotMatch) {
                            Func::RegexMatch
                        } else {
                            Func::RegexIMatch
                        };
                        let m = fold(Expr::Call(func, vec![l, r]))?;
                        return Ok(if matches!(op, O::PGRegexNotMatch | O::PGRegexNotIMatch) {
                            Expr::Not(b(m))
                        } else {
                            m
                        });
                    }
                    O::PGLikeMatch | O::PGNotLikeMatch | O::PGILikeMatch | O::PGNotILikeMatch => {
                        return Ok(Expr::Like {
                            expr: b(l),
                            pattern: b(r),
                            negated: matches!(op, O::PGNotLikeMatch | O::PGNotILikeMatch),
                            case_insensitive: matches!(op, O::PGILikeMatch | O::PGNotILikeMatch),
                        })
                    }
                    other => return Err(Error::FeatureNotSupported(format!("operator {other}"))),
                };
                if matches!(bop, BinOp::JsonGet | BinOp::JsonGetText) {
                    // The key is text or an integer index as written, never JSON.
                    return Ok(Expr::Binary(bop, b(l), b(r)));
                }
                let (l, r) = self.coerce_pair(l, r, &scope.columns)?;
                Expr::Binary(bop, b(l), b(r))
            }
            E::IsNull(x) => Expr::IsNull(b(self.bind(x, scope).await?), false),
            E::IsNotNull(x) => Expr::IsNull(b(self.bind(x, scope).await?), true),
            E::IsTrue(x) | E::IsFalse(x) | E::IsNotTrue(x) | E::IsNotFalse(x) => {
                // `x IS TRUE` is `x IS NOT DISTINCT FROM true`, and so on.
                let value = matches!(e, E::IsTrue(_) | E::IsNotTrue(_));
                let not_distinct = matches!(e, E::IsTrue(_) | E::IsFalse(_));
                Expr::IsDistinct(
                    b(self.bind(x, scope).await?),
                    b(Expr::Literal(Datum::Bool(value))),
                    not_distinct,
                )
            }
            E::IsDistinctFrom(x, y) | E::IsNotDistinctFrom(x, y) => {
                let (l, r) = (self.bind(x, scope).await?, self.bind(y, scope).await?);
                let (l, r) = self.coerce_pair(l, r, &scope.columns)?;
                Expr::IsDistinct(b(l), b(r), matches!(e, E::IsNotDistinctFrom(..)))
            }
            E::In {
                expr,
                target,
                negated,
                ..
            } => {
                let mut x = self.bind(expr, scope).await?;
                if let (ast::InTarget::List(items), Some(_)) = (target, placeholder_index(expr)) {
                    // `$1 IN (a, b)`: the placeholder takes the list's type.
                    if let Some(first) = items.iter().find(|i| placeholder_index(i).is_none()) {
                        let t = self.bind(first, scope).await?;
                        self.hint(expr, &type_of(&t, &scope.columns));
                        x = self.bind(expr, scope).await?;
                    }
                }
                let ty = type_of(&x, &scope.columns);
                let list = match target {
                    ast::InTarget::List(items) => {
                        let mut out = Vec::new();
                        for i in items {
                            self.hint(i, &ty);
                            let v = self.bind(i, scope).await?;
                            out.push(coerce_to(v, &ty, &scope.columns)?);
                        }
                        out
                    }
                    ast::InTarget::Subquery(q) => {
                        let planned = self.plan_query(q).await?;
                        if planned.columns.len() != 1 {
                            return Err(Error::Syntax("subquery has too many columns".into()));
                        }
                        execute(&planned.node, self.txn)
                            .await?
                            .into_iter()
                            .map(|mut r| Expr::Literal(r.swap_remove(0)))
                            .collect()
                    }
                    other => return Err(Error::FeatureNotSupported(format!("IN {other}"))),
                };
                Expr::InList(b(x), list, *negated)
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = self.bind(expr, scope).await?;
                let ty = type_of(&x, &scope.columns);
                self.hint(low, &ty);
                self.hint(high, &ty);
                let lo = self.bind(low, scope).await?;
                let hi = self.bind(high, scope).await?;
                let (x1, lo) = self.coerce_pair(x.clone(), lo, &scope.columns)?;
                let (x2, hi) = self.coerce_pair(x, hi, &scope.columns)?;
                let inside = Expr::And(
                    b(Expr::Binary(BinOp::GtEq, b(x1), b(lo))),
                    b(Expr::Binary(BinOp::LtEq, b(x2), b(hi))),
                );
                if *negated {
                    Expr::Not(b(inside))
                } else {
                    inside
                }
            }
            E::Like {
                negated,
                expr,
                pattern,
                ..
            }
            | E::ILike {
                negated,
                expr,
                pattern,
                ..
            } => {
                self.hint(expr, &Type::TEXT);
                self.hint(pattern, &Type::TEXT);
                Expr::Like {
                    expr: b(self.bind(expr, scope).await?),
                    pattern: b(self.bind(pattern, scope).await?),
                    negated: *negated,
                    case_insensitive: matches!(e, E::ILike { .. }),
                }
            }
            E::Cast {
                expr, data_type, ..
            } => {
                let ty = sql_type(data_type)?;
                self.hint(expr, &ty);
                let x = self.bind(expr, scope).await?;
                fold(Expr::Cast(b(x), ty))?
            }
            E::TypedString(ts) => {
                let ty = sql_type(&ts.data_type)?;
                let v = literal(&ts.value.value)?;
                fold(Expr::Cast(b(v), ty))?
            }
            E::Interval(iv) => {
                let v = self.bind(&iv.value, scope).await?;
                let text = match v.eval(&[])? {
                    Datum::String(s) => s,
                    other => other.to_string(),
                };
                let unit = iv
                    .leading_field
                    .as_ref()
                    .map(|f| format!(" {f}"))
                    .unwrap_or_default();
                Expr::Literal(Datum::Interval(crate::functions::parse_interval(
                    &(text + &unit),
                )?))
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let operand = match operand {
                    Some(o) => Some(b(self.bind(o, scope).await?)),
                    None => None,
                };
                let mut whens = Vec::new();
                for c in conditions {
                    whens.push((
                        self.bind(&c.condition, scope).await?,
                        self.bind(&c.result, scope).await?,
                    ));
                }
                let otherwise = match else_result {
                    Some(x) => Some(b(self.bind(x, scope).await?)),
                    None => None,
                };
                Expr::Case {
                    operand,
                    whens,
                    otherwise,
                }
            }
            E::Exists { subquery, negated } => {
                let planned = self.plan_query(subquery).await?;
                let node = Node::Limit {
                    input: Box::new(planned.node),
                    limit: Some(1),
                    offset: 0,
                };
                let any = !execute(&node, self.txn).await?.is_empty();
                Expr::Literal(Datum::Bool(any != *negated))
            }
            E::Subquery(q) => {
                let planned = self.plan_query(q).await?;
                if planned.columns.len() != 1 {
                    return Err(Error::Syntax("subquery must return only one column".into()));
                }
                let rows = execute(&planned.node, self.txn).await?;
                if rows.len() > 1 {
                    return Err(Error::CardinalityViolation);
                }
                let v = rows
                    .into_iter()
                    .next()
                    .map(|mut r| r.swap_remove(0))
                    .unwrap_or(Datum::Null);
                Expr::Literal(v)
            }
            E::Extract { field, expr, .. } => Expr::Call(
                Func::DatePart,
                vec![
                    Expr::Literal(Datum::String(field.to_string().to_lowercase())),
                    self.bind(expr, scope).await?,
                ],
            ),
            E::Ceil { expr, .. } => Expr::Call(Func::Ceil, vec![self.bind(expr, scope).await?]),
            E::Floor { expr, .. } => Expr::Call(Func::Floor, vec![self.bind(expr, scope).await?]),
            E::Position { expr, r#in } => Expr::Call(
                Func::Strpos,
                vec![self.bind(r#in, scope).await?, self.bind(expr, scope).await?],
            ),
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.bind(expr, scope).await?];
                args.push(match substring_from {
                    Some(f) => self.bind(f, scope).await?,
                    None => Expr::Literal(Datum::Int(1)),
                });
                if let Some(f) = substring_for {
                    args.push(self.bind(f, scope).await?);
                }
                Expr::Call(Func::Substr, args)
            }
            E::Trim {
                expr,
                trim_where,
                trim_what,
                ..
            } => {
                let f = match trim_where {
                    Some(ast::TrimWhereField::Leading) => Func::Ltrim,
                    Some(ast::TrimWhereField::Trailing) => Func::Rtrim,
                    _ => Func::Trim,
                };
                let mut args = vec![self.bind(expr, scope).await?];
                if let Some(w) = trim_what {
                    args.push(self.bind(w, scope).await?);
                }
                Expr::Call(f, args)
            }
            E::Function(f) => self.bind_function(f, scope).await?,
            other => return Err(Error::FeatureNotSupported(format!("expression {other}"))),
        })
    }

    async fn bind_function(&mut self, f: &ast::Function, scope: &Scope) -> Result<Expr> {
        let name = f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident)
            .unwrap_or_default();
        let mut args = Vec::new();
        match &f.args {
            ast::FunctionArguments::None => {
                return match name.as_str() {
                    "current_timestamp" | "localtimestamp" | "now" => {
                        Ok(Expr::Literal(Datum::TimestampTz(self.now)))
                    }
                    "current_date" => Ok(Expr::Literal(Datum::Date(self.now.date_naive()))),
                    "current_user" | "session_user" | "user" => {
                        Ok(Expr::Literal(Datum::String("root".into())))
                    }
                    "current_catalog" => Ok(Expr::Literal(Datum::String(self.database.clone()))),
                    _ => Err(Error::UndefinedFunction(name)),
                };
            }
            ast::FunctionArguments::List(l) => {
                for a in &l.args {
                    match a {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => {
                            args.push(self.bind(x, scope).await?)
                        }
                        other => {
                            return Err(Error::FeatureNotSupported(format!("argument {other}")))
                        }
                    }
                }
            }
            ast::FunctionArguments::Subquery(_) => {
                return Err(Error::FeatureNotSupported(format!("{name}(subquery)")))
            }
        }
        match name.as_str() {
            "now" | "current_timestamp" | "transaction_timestamp" | "statement_timestamp" => {
                return Ok(Expr::Literal(Datum::TimestampTz(self.now)))
            }
            "current_database" | "current_schema" => {
                let v = if name == "current_schema" {
                    "public".to_string()
                } else {
                    self.database.clone()
                };
                return Ok(Expr::Literal(Datum::String(v)));
            }
            _ => {}
        }
        let func = Func::lookup(&name).ok_or_else(|| Error::UndefinedFunction(name.clone()))?;
        func.check_arity(args.len())?;
        fold(Expr::Call(func, args))
    }

    /// Makes two operands comparable: an untyped literal takes the other side's type.
    fn coerce_pair(&self, l: Expr, r: Expr, cols: &[Column]) -> Result<(Expr, Expr)> {
        let (lt, rt) = (type_of(&l, cols), type_of(&r, cols));
        let l_text_lit = matches!(&l, Expr::Literal(Datum::String(_)));
        let r_text_lit = matches!(&r, Expr::Literal(Datum::String(_)));
        if r_text_lit && !lt.is_string() && lt != Type::Unknown {
            return Ok((l, coerce_to(r, &lt, cols)?));
        }
        if l_text_lit && !rt.is_string() && rt != Type::Unknown {
            let l = coerce_to(l, &rt, cols)?;
            return Ok((l, r));
        }
        if lt.family() != 0 && rt.family() != 0 && lt.family() != rt.family() {
            let date_interval = matches!(
                (lt.family(), rt.family()),
                (5, 6) | (6, 5) | (5, 2) | (2, 5)
            );
            let json_key = lt == Type::Jsonb;
            let concat = lt.is_string() || rt.is_string();
            if !date_interval && !json_key && !concat {
                return Err(Error::DatatypeMismatch(format!(
                    "unsupported comparison operator: <{}> and <{}>",
                    lt.pg_name(),
                    rt.pg_name()
                )));
            }
        }
        Ok((l, r))
    }

    /// Plans a query (SELECT, VALUES, set operations, WITH).
    pub fn plan_query<'s>(&'s mut self, q: &'s ast::Query) -> BoxFuture<'s, Result<Planned>> {
        Box::pin(async move { self.plan_query_inner(q).await })
    }

    async fn plan_query_inner(&mut self, q: &ast::Query) -> Result<Planned> {
        let saved_ctes = self.ctes.len();
        if let Some(with) = &q.with {
            if with.recursive {
                return Err(Error::FeatureNotSupported("WITH RECURSIVE".into()));
            }
            for cte in &with.cte_tables {
                let planned = self.plan_query(&cte.query).await?;
                let rows = execute(&planned.node, self.txn).await?;
                let name = ident(&cte.alias.name);
                let mut cols = planned.columns;
                for (c, a) in cols.iter_mut().zip(&cte.alias.columns) {
                    c.name = ident(&a.name);
                }
                for c in cols.iter_mut() {
                    c.table = Some(name.clone());
                }
                self.ctes.push((name, cols, rows));
            }
        }
        let order_by: Vec<ast::OrderByExpr> = match &q.order_by {
            Some(ast::OrderBy {
                kind: ast::OrderByKind::Expressions(v),
                ..
            }) => v.clone(),
            Some(_) => return Err(Error::FeatureNotSupported("ORDER BY ALL".into())),
            None => Vec::new(),
        };
        let result = self.plan_body(&q.body, &order_by).await;
        self.ctes.truncate(saved_ctes);
        let mut planned = result?;
        let (limit, offset) = match &q.limit_clause {
            Some(ast::LimitClause::LimitOffset { limit, offset, .. }) => {
                let empty = Scope::default();
                let l = match limit {
                    Some(l) => {
                        self.hint(l, &Type::Int8);
                        Some(const_usize(&self.bind(l, &empty).await?, "LIMIT")?)
                    }
                    None => None,
                };
                let o = match offset {
                    Some(o) => {
                        self.hint(&o.value, &Type::Int8);
                        const_usize(&self.bind(&o.value, &empty).await?, "OFFSET")?
                    }
                    None => 0,
                };
                (l, o)
            }
            Some(ast::LimitClause::OffsetCommaLimit { .. }) => {
                return Err(Error::Syntax(
                    "LIMIT offset, count is not PostgreSQL".into(),
                ))
            }
            None => (None, 0),
        };
        if limit.is_some() || offset > 0 {
            // A limit right above a filtered scan (no sort, no grouping) stops the scan early.
            if let (Some(l), Node::Scan { limit: sl, .. }) = (limit, &mut planned.node) {
                *sl = Some(l.saturating_add(offset));
            }
            planned.node = Node::Limit {
                input: Box::new(planned.node),
                limit,
                offset,
            };
        }
        Ok(planned)
    }

    async fn plan_body(
        &mut self,
        body: &ast::SetExpr,
        order_by: &[ast::OrderByExpr],
    ) -> Result<Planned> {
        match body {
            ast::SetExpr::Select(s) => self.plan_select(s, order_by).await,
            ast::SetExpr::Query(q) => {
                let p = self.plan_query(q).await?;
                self.sort_output(p, order_by).await
            }
            ast::SetExpr::Values(v) => {
                let p = self.plan_values(v).await?;
                self.sort_output(p, order_by).await
            }
            ast::SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let l = Box::pin(self.plan_body(left, &[])).await?;
                let r = Box::pin(self.plan_body(right, &[])).await?;
                if l.columns.len() != r.columns.len() {
                    return Err(Error::Syntax(format!(
                        "each {op} query must have the same number of columns"
                    )));
                }
                let op = match op {
                    ast::SetOperator::Union => SetOp::Union,
                    ast::SetOperator::Intersect => SetOp::Intersect,
                    ast::SetOperator::Except | ast::SetOperator::Minus => SetOp::Except,
                };
                let columns = l
                    .columns
                    .iter()
                    .zip(&r.columns)
                    .map(|(a, b)| Column {
                        ty: if a.ty == Type::Unknown {
                            b.ty.clone()
                        } else {
                            a.ty.clone()
                        },
                        table: None,
                        ..a.clone()
                    })
                    .collect();
                let p = Planned {
                    node: Node::SetOp {
                        left: Box::new(l.node),
                        right: Box::new(r.node),
                        op,
                        all: matches!(set_quantifier, ast::SetQuantifier::All),
                    },
                    columns,
                };
                self.sort_output(p, order_by).await
            }
            other => Err(Error::FeatureNotSupported(format!("query {other}"))),
        }
    }

    /// Sorts a finished query's output by ORDER BY items naming its columns.
    async fn sort_output(&mut self, p: Planned, order_by: &[ast::OrderByExpr]) -> Result<Planned> {
        if order_by.is_empty() {
            return Ok(p);
        }
        let scope = Scope::new(p.columns.clone());
        let mut keys = Vec::new();
        for o in order_by {
            let expr = match self.output_ref(&o.expr, &p.columns)? {
                Some(i) => Expr::Column(i),
                None => self.bind(&o.expr, &scope).await?,
            };
            keys.push(sort_key(expr, &o.options));
        }
        Ok(Planned {
            node: Node::Sort {
                input: Box::new(p.node),
                keys,
            },
            columns: p.columns,
        })
    }

    /// An ORDER BY item that names an output column (by position or alias).
    fn output_ref(&self, e: &ast::Expr, cols: &[Column]) -> Result<Option<usize>> {
        match e {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => {
                    let i: usize = n.parse().unwrap_or(0);
                    if i == 0 || i > cols.len() {
                        return Err(Error::InvalidParameterValue(format!(
                            "ORDER BY position {n} is not in select list"
                        )));
                    }
                    Ok(Some(i - 1))
                }
                _ => Ok(None),
            },
            ast::Expr::Identifier(id) => {
                let n = ident(id);
                Ok(cols.iter().position(|c| c.name == n && !c.hidden))
            }
            _ => Ok(None),
        }
    }

    async fn plan_values(&mut self, v: &ast::Values) -> Result<Planned> {
        let empty = Scope::default();
        let mut rows = Vec::new();
        for r in &v.rows {
            let mut row = Vec::new();
            for e in r.iter() {
                row.push(self.bind(e, &empty).await?);
            }
            if rows
                .first()
                .is_some_and(|f: &Vec<Expr>| f.len() != row.len())
            {
                return Err(Error::Syntax(
                    "VALUES lists must all be the same length".into(),
                ));
            }
            rows.push(row);
        }
        let columns = rows
            .first()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(i, e)| Column {
                        name: format!("column{}", i + 1),
                        table: None,
                        ty: rows
                            .iter()
                            .map(|row| type_of(&row[i], &[]))
                            .find(|t| *t != Type::Unknown)
                            .unwrap_or_else(|| type_of(e, &[])),
                        hidden: false,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Planned {
            node: Node::Values { rows },
            columns,
        })
    }

    /// Plans one FROM item.
    async fn plan_factor(&mut self, f: &ast::TableFactor) -> Result<Planned> {
        match f {
            ast::TableFactor::Table { name, alias, .. } => {
                let parts = name_parts(name);
                let alias_name = alias.as_ref().map(|a| ident(&a.name));
                if parts.len() == 1 {
                    if let Some((n, cols, rows)) = self
                        .ctes
                        .iter()
                        .rev()
                        .find(|(n, ..)| *n == parts[0])
                        .cloned()
                    {
                        let t = alias_name.unwrap_or(n);
                        let columns = cols
                            .into_iter()
                            .map(|c| Column {
                                table: Some(t.clone()),
                                ..c
                            })
                            .collect();
                        return Ok(Planned {
                            node: Node::Rows { rows },
                            columns,
                        });
                    }
                }
                if let [.., schema, vt] = parts.as_slice() {
                    let virtual_schema = [
                        crate::internal::SCHEMA,
                        crate::internal::PG_CATALOG,
                        crate::internal::INFORMATION_SCHEMA,
                    ];
                    if virtual_schema.contains(&schema.as_str()) {
                        let Some((cols, rows)) = crate::internal::table(self, schema, vt).await?
                        else {
                            return Err(Error::UndefinedTable(name.to_string()));
                        };
                        let t = alias_name.unwrap_or_else(|| vt.clone());
                        let columns = cols
                            .into_iter()
                            .map(|c| Column {
                                table: Some(t.clone()),
                                ..c
                            })
                            .collect();
                        return Ok(Planned {
                            node: Node::Rows { rows },
                            columns,
                        });
                    }
                }
                let table = must_table(self, name).await?;
                let t = alias_name.unwrap_or_else(|| table.name.clone());
                let columns = table
                    .columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.clone(),
                        table: Some(t.clone()),
                        ty: c.ty.clone(),
                        hidden: c.hidden,
                    })
                    .collect();
                Ok(Planned {
                    node: Node::Scan {
                        table,
                        keys: None,
                        filter: None,
                        limit: None,
                    },
                    columns,
                })
            }
            ast::TableFactor::Derived {
                subquery, alias, ..
            } => {
                let p = self.plan_query(subquery).await?;
                let t = alias.as_ref().map(|a| ident(&a.name));
                let columns = p
                    .columns
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| Column {
                        name: alias
                            .as_ref()
                            .and_then(|a| a.columns.get(i))
                            .map(|a| ident(&a.name))
                            .unwrap_or(c.name),
                        table: t.clone(),
                        ..c
                    })
                    .collect();
                Ok(Planned {
                    node: p.node,
                    columns,
                })
            }
            ast::TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.plan_from_item(table_with_joins).await,
            other => Err(Error::FeatureNotSupported(format!("FROM {other}"))),
        }
    }

    async fn plan_from_item(&mut self, twj: &ast::TableWithJoins) -> Result<Planned> {
        let mut left = Box::pin(self.plan_factor(&twj.relation)).await?;
        for j in &twj.joins {
            let right = Box::pin(self.plan_factor(&j.relation)).await?;
            use ast::JoinOperator as J;
            let (kind, constraint) = match &j.join_operator {
                J::Join(c) | J::Inner(c) => (JoinKind::Inner, Some(c)),
                J::Left(c) | J::LeftOuter(c) => (JoinKind::Left, Some(c)),
                J::Right(c) | J::RightOuter(c) => (JoinKind::Right, Some(c)),
                J::FullOuter(c) => (JoinKind::Full, Some(c)),
                J::CrossJoin(_) => (JoinKind::Inner, None),
                other => return Err(Error::FeatureNotSupported(format!("join {other:?}"))),
            };
            left = self.plan_join(left, right, kind, constraint).await?;
        }
        Ok(left)
    }

    async fn plan_join(
        &mut self,
        left: Planned,
        right: Planned,
        kind: JoinKind,
        constraint: Option<&ast::JoinConstraint>,
    ) -> Result<Planned> {
        let (lw, rw) = (left.columns.len(), right.columns.len());
        let mut columns = left.columns.clone();
        columns.extend(right.columns.iter().cloned());
        let scope = Scope::new(columns.clone());
        let mut using: Vec<String> = Vec::new();
        let on = match constraint {
            None | Some(ast::JoinConstraint::None) => None,
            Some(ast::JoinConstraint::On(e)) => Some(self.bind(e, &scope).await?),
            Some(ast::JoinConstraint::Using(names)) => {
                using = names.iter().filter_map(|n| name_parts(n).pop()).collect();
                Some(using_condition(&using, &left.columns, &right.columns, lw)?)
            }
            Some(ast::JoinConstraint::Natural) => {
                using = left
                    .columns
                    .iter()
                    .filter(|c| !c.hidden && right.columns.iter().any(|r| r.name == c.name))
                    .map(|c| c.name.clone())
                    .collect();
                if using.is_empty() {
                    None
                } else {
                    Some(using_condition(&using, &left.columns, &right.columns, lw)?)
                }
            }
            Some(other) => return Err(Error::FeatureNotSupported(format!("join {other:?}"))),
        };
        // Equality conjuncts between a left and a right column drive a hash join.
        let mut equi = Vec::new();
        if let Some(on) = &on {
            for c in conjuncts(on) {
                if let Expr::Binary(BinOp::Eq, a, b) = c {
                    let side = |e: &Expr| {
                        let mut cols = Vec::new();
                        e.walk(&mut |x| {
                            if let Expr::Column(i) = x {
                                cols.push(*i)
                            }
                        });
                        if cols.is_empty() {
                            None
                        } else if cols.iter().all(|i| *i < lw) {
                            Some(true)
                        } else if cols.iter().all(|i| *i >= lw) {
                            Some(false)
                        } else {
                            None
                        }
                    };
                    let pair = match (side(a), side(b)) {
                        (Some(true), Some(false)) => Some(((**a).clone(), (**b).clone())),
                        (Some(false), Some(true)) => Some(((**b).clone(), (**a).clone())),
                        _ => None,
                    };
                    if let Some((l, mut r)) = pair {
                        r.remap(&|i| i - lw);
                        equi.push((l, r));
                    }
                }
            }
        }
        // USING columns appear once; the right copy is hidden from `*`.
        for name in &using {
            if let Some(c) = columns[lw..].iter_mut().find(|c| &c.name == name) {
                c.hidden = true;
            }
        }
        Ok(Planned {
            node: Node::Join {
                left: Box::new(left.node),
                right: Box::new(right.node),
                kind,
                on,
                equi,
                left_width: lw,
                right_width: rw,
            },
            columns,
        })
    }

    /// Binds a select list (or RETURNING list): one expression and output column per item,
    /// `*` and `t.*` expanded to the visible columns.
    pub async fn bind_projection(
        &mut self,
        items: &[ast::SelectItem],
        scope: &Scope,
    ) -> Result<(Vec<Expr>, Vec<Column>)> {
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for item in items {
            match item {
                ast::SelectItem::Wildcard(_) => {
                    if scope.grouped.is_some() {
                        return Err(Error::Grouping(
                            "SELECT * is not allowed with GROUP BY".into(),
                        ));
                    }
                    for (i, c) in scope.columns.iter().enumerate() {
                        if !c.hidden {
                            exprs.push(Expr::Column(i));
                            columns.push(c.clone());
                        }
                    }
                }
                ast::SelectItem::QualifiedWildcard(kind, _) => {
                    let t = match kind {
                        ast::SelectItemQualifiedWildcardKind::ObjectName(n) => {
                            name_parts(n).pop().unwrap_or_default()
                        }
                        ast::SelectItemQualifiedWildcardKind::Expr(e) => e.to_string(),
                    };
                    let mut any = false;
                    for (i, c) in scope.columns.iter().enumerate() {
                        if !c.hidden && c.table.as_deref() == Some(t.as_str()) {
                            exprs.push(Expr::Column(i));
                            columns.push(c.clone());
                            any = true;
                        }
                    }
                    if !any {
                        return Err(Error::UndefinedTable(t));
                    }
                }
                ast::SelectItem::UnnamedExpr(e) => {
                    let x = self.bind(e, scope).await?;
                    columns.push(Column {
                        name: output_name(e),
                        table: match &x {
                            Expr::Column(i) => scope.columns[*i].table.clone(),
                            _ => None,
                        },
                        ty: type_of(&x, &scope.columns),
                        hidden: false,
                    });
                    exprs.push(x);
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    let x = self.bind(expr, scope).await?;
                    columns.push(Column {
                        name: ident(alias),
                        table: None,
                        ty: type_of(&x, &scope.columns),
                        hidden: false,
                    });
                    exprs.push(x);
                }
                other => return Err(Error::FeatureNotSupported(format!("select item {other}"))),
            }
        }
        Ok((exprs, columns))
    }

    async fn plan_select(
        &mut self,
        s: &ast::Select,
        order_by: &[ast::OrderByExpr],
    ) -> Result<Planned> {
        // FROM
        let mut input = if s.from.is_empty() {
            Planned {
                node: Node::Values {
                    rows: vec![Vec::new()],
                },
                columns: Vec::new(),
            }
        } else {
            let mut acc: Option<Planned> = None;
            for twj in &s.from {
                let p = self.plan_from_item(twj).await?;
                acc = Some(match acc {
                    None => p,
                    Some(l) => self.plan_join(l, p, JoinKind::Inner, None).await?,
                });
            }
            acc.expect("FROM is not empty")
        };
        let scope = Scope::new(input.columns.clone());
        // WHERE
        if let Some(w) = &s.selection {
            let pred = self.bind(w, &scope).await?;
            if type_of(&pred, &scope.columns) != Type::Bool
                && type_of(&pred, &scope.columns) != Type::Unknown
            {
                return Err(Error::DatatypeMismatch(
                    "argument of WHERE must be type boolean".into(),
                ));
            }
            input.node = push_filter(input.node, pred)?;
        }
        // GROUP BY and aggregates
        let group_exprs: Vec<ast::Expr> = match &s.group_by {
            ast::GroupByExpr::Expressions(v, _) => v.clone(),
            ast::GroupByExpr::All(_) => {
                return Err(Error::FeatureNotSupported("GROUP BY ALL".into()))
            }
        };
        let mut agg_calls = Vec::new();
        for item in &s.projection {
            if let ast::SelectItem::UnnamedExpr(e)
            | ast::SelectItem::ExprWithAlias { expr: e, .. } = item
            {
                collect_aggregates(e, &mut agg_calls);
            }
        }
        if let Some(h) = &s.having {
            collect_aggregates(h, &mut agg_calls);
        }
        for o in order_by {
            collect_aggregates(&o.expr, &mut agg_calls);
        }
        let mut scope = scope;
        if !group_exprs.is_empty() || !agg_calls.is_empty() || s.having.is_some() {
            let mut group_by = Vec::new();
            let mut cols = Vec::new();
            let mut grouped = Vec::new();
            for (i, g) in group_exprs.iter().enumerate() {
                // GROUP BY 1 refers to the first select item.
                let g = match g {
                    ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(..)) => {
                        let n: usize = v.value.to_string().parse().unwrap_or(0);
                        match s.projection.get(n.wrapping_sub(1)) {
                            Some(ast::SelectItem::UnnamedExpr(e))
                            | Some(ast::SelectItem::ExprWithAlias { expr: e, .. }) => e.clone(),
                            _ => {
                                return Err(Error::InvalidParameterValue(format!(
                                    "GROUP BY position {n} is not in select list"
                                )))
                            }
                        }
                    }
                    ast::Expr::Identifier(id) if scope.resolve(None, &ident(id)).is_err() => {
                        // GROUP BY an output alias.
                        s.projection
                            .iter()
                            .find_map(|p| match p {
                                ast::SelectItem::ExprWithAlias { expr, alias }
                                    if ident(alias) == ident(id) =>
                                {
                                    Some(expr.clone())
                                }
                                _ => None,
                            })
                            .unwrap_or_else(|| g.clone())
                    }
                    other => other.clone(),
                };
                let e = self.bind(&g, &scope).await?;
                let ty = type_of(&e, &scope.columns);
                let name = match &e {
                    Expr::Column(c) => scope.columns[*c].name.clone(),
                    _ => format!("group{}", i + 1),
                };
                let table = match &e {
                    Expr::Column(c) => scope.columns[*c].table.clone(),
                    _ => None,
                };
                cols.push(Column {
                    name,
                    table,
                    ty,
                    hidden: false,
                });
                grouped.push((g, i));
                group_by.push(e);
            }
            let mut aggs = Vec::new();
            for call in &agg_calls {
                let ast::Expr::Function(f) = call else {
                    continue;
                };
                let fname = f.name.to_string().to_lowercase();
                let mut func = aggregate_func(&fname).expect("collected as an aggregate");
                let mut args = Vec::new();
                let mut distinct = false;
                if let ast::FunctionArguments::List(l) = &f.args {
                    distinct = matches!(
                        l.duplicate_treatment,
                        Some(ast::DuplicateTreatment::Distinct)
                    );
                    for a in &l.args {
                        match a {
                            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)
                                if func == AggFunc::Count =>
                            {
                                func = AggFunc::CountStar
                            }
                            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => {
                                args.push(self.bind(x, &scope).await?)
                            }
                            other => {
                                return Err(Error::FeatureNotSupported(format!(
                                    "aggregate argument {other}"
                                )))
                            }
                        }
                    }
                }
                let arg_ty = args
                    .first()
                    .map(|a| type_of(a, &scope.columns))
                    .unwrap_or(Type::Unknown);
                let ty = match func {
                    AggFunc::CountStar | AggFunc::Count => Type::Int8,
                    AggFunc::Sum if arg_ty.is_int() => Type::Decimal {
                        precision: None,
                        scale: None,
                    },
                    AggFunc::Avg if arg_ty.is_int() || matches!(arg_ty, Type::Decimal { .. }) => {
                        Type::Decimal {
                            precision: None,
                            scale: None,
                        }
                    }
                    AggFunc::Sum | AggFunc::Avg if matches!(arg_ty, Type::Float4) => Type::Float8,
                    AggFunc::Sum | AggFunc::Avg => match arg_ty {
                        Type::Decimal { .. } => Type::Decimal {
                            precision: None,
                            scale: None,
                        },
                        t => t,
                    },
                    AggFunc::Min | AggFunc::Max => arg_ty,
                    AggFunc::StringAgg => Type::TEXT,
                    AggFunc::BoolAnd | AggFunc::BoolOr => Type::Bool,
                };
                grouped.push((call.clone(), cols.len()));
                cols.push(Column {
                    name: fname,
                    table: None,
                    ty,
                    hidden: false,
                });
                aggs.push(Aggregate {
                    func,
                    args,
                    distinct,
                });
            }
            input = Planned {
                node: Node::Aggregate {
                    input: Box::new(input.node),
                    group_by,
                    aggs,
                },
                columns: cols.clone(),
            };
            scope = Scope {
                columns: cols,
                grouped: Some(grouped),
            };
            if let Some(h) = &s.having {
                let pred = self.bind(h, &scope).await?;
                input.node = Node::Filter {
                    input: Box::new(input.node),
                    predicate: pred,
                };
            }
        }
        let (mut exprs, mut columns) = self.bind_projection(&s.projection, &scope).await?;
        // ORDER BY: output columns by alias or position, else expressions over the input
        // computed as extra (hidden) outputs.
        let visible = exprs.len();
        let mut keys = Vec::new();
        for o in order_by {
            let i = match self.output_ref(&o.expr, &columns)? {
                Some(i) => i,
                None => {
                    let x = self.bind(&o.expr, &scope).await?;
                    let existing = exprs
                        .iter()
                        .position(|e| format!("{e:?}") == format!("{x:?}"));
                    match existing {
                        Some(i) => i,
                        None => {
                            if s.distinct.is_some() {
                                return Err(Error::InvalidParameterValue(
                                    "for SELECT DISTINCT, ORDER BY expressions must appear in \
                                     select list"
                                        .into(),
                                ));
                            }
                            columns.push(Column {
                                name: String::new(),
                                table: None,
                                ty: type_of(&x, &scope.columns),
                                hidden: true,
                            });
                            exprs.push(x);
                            exprs.len() - 1
                        }
                    }
                }
            };
            keys.push(sort_key(Expr::Column(i), &o.options));
        }
        let mut node = Node::Project {
            input: Box::new(input.node),
            exprs,
        };
        match &s.distinct {
            None | Some(ast::Distinct::All) => {}
            Some(ast::Distinct::Distinct) => {
                node = Node::Distinct {
                    input: Box::new(node),
                }
            }
            Some(ast::Distinct::On(_)) => {
                return Err(Error::FeatureNotSupported("DISTINCT ON".into()))
            }
        }
        if !keys.is_empty() {
            node = Node::Sort {
                input: Box::new(node),
                keys,
            };
        }
        if columns.len() > visible {
            columns.truncate(visible);
            node = Node::Project {
                input: Box::new(node),
                exprs: (0..visible).map(Expr::Column).collect(),
            };
        }
        Ok(Planned { node, columns })
    }
}

fn sort_key(expr: Expr, o: &ast::OrderByOptions) -> SortKey {
    let desc = matches!(o.sort, Some(ast::OrderBySort::Desc));
    SortKey {
        expr,
        desc,
        nulls_first: o.nulls_first.unwrap_or(desc),
    }
}

fn using_condition(names: &[String], left: &[Column], right: &[Column], lw: usize) -> Result<Expr> {
    let mut cond: Option<Expr> = None;
    for n in names {
        let l = left
            .iter()
            .position(|c| &c.name == n)
            .ok_or_else(|| Error::UndefinedColumn(n.clone()))?;
        let r = right
            .iter()
            .position(|c| &c.name == n)
            .ok_or_else(|| Error::UndefinedColumn(n.clone()))?;
        let eq = Expr::Binary(
            BinOp::Eq,
            Box::new(Expr::Column(l)),
            Box::new(Expr::Column(lw + r)),
        );
        cond = Some(match cond {
            None => eq,
            Some(c) => Expr::And(Box::new(c), Box::new(eq)),
        });
    }
    cond.ok_or_else(|| Error::Syntax("USING needs columns".into()))
}

/// The name Postgres gives an unaliased select item.
fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(i) => ident(i),
        ast::Expr::CompoundIdentifier(p) => p.last().map(ident).unwrap_or_default(),
        ast::Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident)
            .unwrap_or_else(|| "?column?".into()),
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => output_name(expr),
        ast::Expr::Case { .. } => "case".into(),
        ast::Expr::Exists { .. } => "exists".into(),
        ast::Expr::Extract { .. } => "extract".into(),
        ast::Expr::Substring { .. } => "substring".into(),
        ast::Expr::Trim { .. } => "btrim".into(),
        ast::Expr::Position { .. } => "position".into(),
        ast::Expr::Ceil { .. } => "ceil".into(),
        ast::Expr::Floor { .. } => "floor".into(),
        ast::Expr::Subquery(q) => match &*q.body {
            ast::SetExpr::Select(s) => match s.projection.first() {
                Some(ast::SelectItem::UnnamedExpr(e)) => output_name(e),
                Some(ast::SelectItem::ExprWithAlias { alias, .. }) => ident(alias),
                _ => "?column?".into(),
            },
            _ => "?column?".into(),
        },
        _ => "?column?".into(),
    }
}

/// Folds an expression with no column reference into a literal (when it evaluates).
///
/// The literal stays under its cast when its value alone would not tell its type
/// (`NULL::int4`, `$1` declared INT2), so result columns and parameters keep their types.
fn fold(e: Expr) -> Result<Expr> {
    if !e.is_constant() {
        return Ok(e);
    }
    let ty = type_of(&e, &[]);
    let value = e.eval(&[])?;
    if ty != Type::Unknown && value.natural_type() != ty {
        return Ok(Expr::Cast(Box::new(Expr::Literal(value)), ty));
    }
    Ok(Expr::Literal(value))
}

/// Casts an expression to `ty` when it is an untyped or string literal (`'5'` for an INT).
pub fn coerce_to(e: Expr, ty: &Type, cols: &[Column]) -> Result<Expr> {
    let et = type_of(&e, cols);
    if *ty == Type::Unknown || et == *ty {
        return Ok(e);
    }
    match &e {
        Expr::Literal(d) if !d.is_null() && (et.is_string() || et.family() != ty.family()) => {
            if et.is_string() || (et.is_numeric() && ty.is_numeric()) {
                return Ok(Expr::Literal(cast(d.clone(), ty)?));
            }
            Ok(e)
        }
        _ => Ok(e),
    }
}

/// The AND-ed parts of a predicate.
pub fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::And(a, b) => {
            let mut v = conjuncts(a);
            v.extend(conjuncts(b));
            v
        }
        other => vec![other],
    }
}

/// Places a filter: into a scan (as its filter, and as point lookups when it fixes the
/// primary key), else as a Filter node.
fn push_filter(node: Node, pred: Expr) -> Result<Node> {
    match node {
        Node::Scan {
            table,
            keys: None,
            filter: None,
            limit,
        } => {
            let keys = lookup(&table, &pred)?;
            Ok(Node::Scan {
                table,
                keys,
                filter: Some(pred),
                limit,
            })
        }
        other => Ok(Node::Filter {
            input: Box::new(other),
            predicate: pred,
        }),
    }
}

/// Column → the constants a predicate pins it to with `=` or `IN` (NULLs, which match
/// nothing, left out). A value that a cast to the column's type would change is not usable.
fn pinned_values(table: &TableDesc, pred: &Expr) -> HashMap<usize, Vec<Datum>> {
    let mut pinned = HashMap::new();
    'conjuncts: for c in conjuncts(pred) {
        let (col, vals) = match c {
            Expr::Binary(BinOp::Eq, a, b) => match (&**a, &**b) {
                (Expr::Column(i), c) | (c, Expr::Column(i)) if c.constant().is_some() => {
                    (*i, c.constant().into_iter().cloned().collect::<Vec<_>>())
                }
                _ => continue,
            },
            Expr::InList(a, list, false) => match &**a {
                Expr::Column(i) => {
                    let mut vals = Vec::new();
                    for item in list {
                        match item.constant() {
                            Some(d) => vals.push(d.clone()),
                            None => continue 'conjuncts,
                        }
                    }
                    (*i, vals)
                }
                _ => continue,
            },
            _ => continue,
        };
        let Some(ty) = table.columns.get(col).map(|c| &c.ty) else {
            continue;
        };
        let mut typed = Vec::new();
        for v in vals {
            if v.is_null() {
                continue;
            }
            match cast(v.clone(), ty) {
                Ok(x) if x.compare(&v) == Some(std::cmp::Ordering::Equal) => typed.push(x),
                _ => continue 'conjuncts,
            }
        }
        pinned.insert(col, typed);
    }
    pinned
}

/// Every key `prefix` + one pinned value of each of `cols`, sorted (`None` past 10,000).
fn key_product(
    prefix: Vec<u8>,
    cols: &[usize],
    pinned: &HashMap<usize, Vec<Datum>>,
) -> Result<Option<Vec<Vec<u8>>>> {
    let mut keys = vec![prefix];
    for c in cols {
        let mut next = Vec::new();
        for k in &keys {
            for v in &pinned[c] {
                let mut key = k.clone();
                encode_key_datum(v, &mut key)?;
                next.push(key);
            }
        }
        keys = next;
        if keys.len() > 10_000 {
            return Ok(None);
        }
    }
    keys.sort();
    keys.dedup();
    Ok(Some(keys))
}

/// If the predicate pins every primary key column to constants (`=` or `IN`), the keys of
/// those rows.
pub fn point_keys(table: &TableDesc, pred: &Expr) -> Result<Option<Vec<Vec<u8>>>> {
    let pinned = pinned_values(table, pred);
    let pk = table.primary_positions();
    if !pk.iter().all(|c| pinned.contains_key(c)) {
        return Ok(None);
    }
    key_product(
        crate::encoding::index_prefix(table.id, table.primary.id),
        &pk,
        &pinned,
    )
}

/// How a predicate narrows a table's rows: the primary keys it pins, else the secondary
/// index whose leading columns it pins most (its entries under those values name the rows).
pub fn lookup(table: &TableDesc, pred: &Expr) -> Result<Option<Lookup>> {
    if let Some(keys) = point_keys(table, pred)? {
        return Ok(Some(Lookup::Primary(keys)));
    }
    let pinned = pinned_values(table, pred);
    let best = table
        .indexes
        .iter()
        .map(|idx| {
            let cols = table.index_positions(idx);
            let n = cols.iter().take_while(|c| pinned.contains_key(c)).count();
            (n, idx, cols)
        })
        .filter(|(n, ..)| *n > 0)
        .max_by_key(|(n, ..)| *n);
    let Some((n, idx, cols)) = best else {
        return Ok(None);
    };
    let prefix = crate::encoding::index_prefix(table.id, idx.id);
    Ok(
        key_product(prefix, &cols[..n], &pinned)?.map(|prefixes| Lookup::Index {
            name: idx.name.clone(),
            prefixes,
        }),
    )
}
