//! Bound expressions and their evaluation.
//!
//! The binder (`planner.rs`) turns parsed SQL expressions into [`Expr`]s whose column
//! references are positions in the input row and whose types are known. Evaluation is a plain
//! recursive walk over one row; NULL follows SQL's three-valued logic (`NULL AND false` is
//! false, `NULL = x` is NULL, `x IN (…, NULL)` is NULL when not found).
//!
//! Uncorrelated subqueries are run before the statement executes and appear here as their
//! results (a literal, a list, or a boolean).

use std::cmp::Ordering;

use rust_decimal::Decimal;

use crate::error::{Error, Result};
use crate::functions::{self, Func};
use crate::types::{dec_to_f64, Datum, Type};

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `||`
    Concat,
    /// `=`
    Eq,
    /// `<>`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `->` (JSONB field or element)
    JsonGet,
    /// `->>` (JSONB field or element as text)
    JsonGetText,
}

/// A bound expression.
#[derive(Clone, Debug)]
pub enum Expr {
    /// A constant.
    Literal(Datum),
    /// The input row's column at this position.
    Column(usize),
    /// A binary operation.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// Arithmetic negation.
    Neg(Box<Expr>),
    /// Logical NOT.
    Not(Box<Expr>),
    /// Logical AND.
    And(Box<Expr>, Box<Expr>),
    /// Logical OR.
    Or(Box<Expr>, Box<Expr>),
    /// `IS [NOT] NULL`.
    IsNull(Box<Expr>, bool),
    /// `IS [NOT] DISTINCT FROM` (negated = NOT DISTINCT).
    IsDistinct(Box<Expr>, Box<Expr>, bool),
    /// `x [NOT] IN (list)`.
    InList(Box<Expr>, Vec<Expr>, bool),
    /// `x [NOT] [I]LIKE pattern`.
    Like {
        /// The value.
        expr: Box<Expr>,
        /// The pattern.
        pattern: Box<Expr>,
        /// NOT LIKE.
        negated: bool,
        /// ILIKE.
        case_insensitive: bool,
    },
    /// A cast to a type.
    Cast(Box<Expr>, Type),
    /// `CASE [operand] WHEN … THEN … ELSE … END`.
    Case {
        /// The operand compared with each WHEN, if any.
        operand: Option<Box<Expr>>,
        /// (condition or value, result) pairs.
        whens: Vec<(Expr, Expr)>,
        /// The ELSE result.
        otherwise: Option<Box<Expr>>,
    },
    /// A scalar function call.
    Call(Func, Vec<Expr>),
    /// A column of the enclosing query's row (position, type), inside a correlated
    /// subquery's plan.
    Outer(usize, Type),
    /// A correlated subquery: run for each row it is evaluated on (see
    /// [`crate::plan::resolve_subqueries`]), its outer references taking that row's values.
    Subquery(Box<Subquery>),
}

/// A subquery that reads columns of the enclosing query's row.
#[derive(Clone, Debug)]
pub struct Subquery {
    /// Its plan, whose [`Expr::Outer`] references name columns of the enclosing row.
    pub node: crate::plan::Node,
    /// What it computes.
    pub kind: SubqueryKind,
    /// The type of its value.
    pub ty: Type,
}

/// What a subquery expression computes from the subquery's rows.
#[derive(Clone, Debug)]
pub enum SubqueryKind {
    /// `(SELECT …)`: the single value, or NULL without rows.
    Scalar,
    /// `[NOT] EXISTS (SELECT …)`.
    Exists {
        /// NOT EXISTS.
        negated: bool,
    },
    /// `x [NOT] IN (SELECT …)`; `x` is evaluated on the enclosing row.
    In {
        /// The value looked for.
        expr: Box<Expr>,
        /// NOT IN.
        negated: bool,
    },
    /// `ARRAY(SELECT …)`: the values as a Postgres array literal.
    Array,
}

impl Expr {
    /// Evaluates the expression on one row.
    ///
    /// This is the recursion every row goes through once per node, so its frame is kept
    /// small: each kind of node is evaluated by a function of its own (in a debug build a
    /// frame holds the locals of every match arm, and one big match made each level of a
    /// 2,000-level expression cost 20 KiB of stack).
    pub fn eval(&self, row: &[Datum]) -> Result<Datum> {
        crate::stack::grow(|| match self {
            Expr::Literal(d) => Ok(d.clone()),
            Expr::Column(i) => row
                .get(*i)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("column {i} out of range"))),
            Expr::Binary(op, l, r) => eval_binary(*op, l, r, row),
            Expr::Neg(e) => negate(e, row),
            Expr::Not(e) => eval_not(e, row),
            Expr::And(l, r) => eval_and(l, r, row),
            Expr::Or(l, r) => eval_or(l, r, row),
            Expr::IsNull(e, negated) => eval_is_null(e, *negated, row),
            Expr::IsDistinct(l, r, negated) => eval_is_distinct(l, r, *negated, row),
            Expr::InList(e, list, negated) => eval_in_list(e, list, *negated, row),
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => eval_like(expr, pattern, *negated, *case_insensitive, row),
            Expr::Cast(e, ty) => eval_cast(e, ty, row),
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => eval_case(operand.as_deref(), whens, otherwise.as_deref(), row),
            Expr::Call(f, args) => eval_call(*f, args, row),
            // Correlated subqueries run in SELECT lists and WHERE clauses of queries; other
            // places (DML, joins, ORDER BY, GROUP BY) do not run them yet.
            Expr::Outer(..) | Expr::Subquery(_) => Err(Error::FeatureNotSupported(
                "a correlated subquery here (only in a query's SELECT list or WHERE)".into(),
            )),
        })
    }

    /// The value of a constant: a literal, or a literal kept under the cast that typed it
    /// (see the planner's folding).
    pub fn constant(&self) -> Option<&Datum> {
        match self {
            Expr::Literal(d) => Some(d),
            Expr::Cast(x, _) => match &**x {
                Expr::Literal(d) => Some(d),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the expression reads no column (it can be evaluated once).
    pub fn is_constant(&self) -> bool {
        let mut constant = true;
        self.walk(&mut |e| {
            if matches!(e, Expr::Column(_) | Expr::Outer(..) | Expr::Subquery(_))
                || matches!(e, Expr::Call(f, _) if f.is_volatile())
            {
                constant = false;
            }
        });
        constant
    }

    /// Whether a correlated subquery is in the expression (it needs
    /// [`crate::plan::resolve_subqueries`] for each row).
    pub fn has_subquery(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| found |= matches!(e, Expr::Subquery(_)));
        found
    }

    /// Visits this expression and every subexpression (not into a subquery's plan; an
    /// `IN (SELECT …)`'s left side is visited).
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        crate::stack::grow(|| {
            f(self);
            match self {
                Expr::Literal(_) | Expr::Column(_) | Expr::Outer(..) => {}
                Expr::Subquery(sub) => {
                    if let SubqueryKind::In { expr, .. } = &sub.kind {
                        expr.walk(f);
                    }
                }
                Expr::Binary(_, a, b)
                | Expr::And(a, b)
                | Expr::Or(a, b)
                | Expr::IsDistinct(a, b, _) => {
                    a.walk(f);
                    b.walk(f);
                }
                Expr::Neg(a) | Expr::Not(a) | Expr::IsNull(a, _) | Expr::Cast(a, _) => a.walk(f),
                Expr::InList(a, list, _) => {
                    a.walk(f);
                    list.iter().for_each(|e| e.walk(f));
                }
                Expr::Like { expr, pattern, .. } => {
                    expr.walk(f);
                    pattern.walk(f);
                }
                Expr::Case {
                    operand,
                    whens,
                    otherwise,
                } => {
                    if let Some(o) = operand {
                        o.walk(f);
                    }
                    for (c, r) in whens {
                        c.walk(f);
                        r.walk(f);
                    }
                    if let Some(o) = otherwise {
                        o.walk(f);
                    }
                }
                Expr::Call(_, args) => args.iter().for_each(|e| e.walk(f)),
            }
        })
    }

    /// Rewrites column references through `map` (old position → new position), including a
    /// correlated subquery's references to this row.
    pub fn remap(&mut self, map: &dyn Fn(usize) -> usize) {
        crate::stack::grow(|| {
            match self {
                Expr::Column(i) => *i = map(*i),
                Expr::Subquery(sub) => {
                    sub.node
                        .map_exprs(&mut |e| e.map_outer(&mut |o| *o = map(*o)));
                }
                _ => {}
            }
            self.for_each_child(&mut |c| c.remap(map));
        })
    }

    /// Applies `f` to every outer reference of this expression (not those of subqueries
    /// nested in it: theirs name this level's rows).
    pub fn map_outer(&mut self, f: &mut dyn FnMut(&mut usize)) {
        self.rewrite(&mut |e| match e {
            Expr::Outer(i, _) => {
                f(i);
                true
            }
            _ => false,
        });
    }

    /// Replaces each outer reference with the value of `row`'s column.
    pub fn bind_outer(&mut self, row: &[Datum]) {
        self.rewrite(&mut |e| match e {
            Expr::Outer(i, _) => {
                *e = Expr::Literal(row.get(*i).cloned().unwrap_or(Datum::Null));
                true
            }
            _ => false,
        });
    }

    /// Visits subexpressions top-down with `f`, which returns whether it handled one (then
    /// its children are not visited). Subqueries' plans are not entered.
    fn rewrite(&mut self, f: &mut dyn FnMut(&mut Expr) -> bool) {
        crate::stack::grow(|| {
            if f(self) {
                return;
            }
            self.for_each_child(&mut |c| c.rewrite(f));
        })
    }

    /// Calls `f` on each direct subexpression, left to right (a subquery's: the left side of
    /// its IN; its plan is not entered).
    pub fn for_each_child(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        match self {
            Expr::Literal(_) | Expr::Column(_) | Expr::Outer(..) => {}
            Expr::Subquery(sub) => {
                if let SubqueryKind::In { expr, .. } = &mut sub.kind {
                    f(expr);
                }
            }
            Expr::Binary(_, a, b)
            | Expr::And(a, b)
            | Expr::Or(a, b)
            | Expr::IsDistinct(a, b, _) => {
                f(a);
                f(b);
            }
            Expr::Neg(a) | Expr::Not(a) | Expr::IsNull(a, _) | Expr::Cast(a, _) => f(a),
            Expr::InList(a, list, _) => {
                f(a);
                list.iter_mut().for_each(f);
            }
            Expr::Like { expr, pattern, .. } => {
                f(expr);
                f(pattern);
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    f(o);
                }
                for (c, r) in whens {
                    f(c);
                    f(r);
                }
                if let Some(o) = otherwise {
                    f(o);
                }
            }
            Expr::Call(_, args) => args.iter_mut().for_each(f),
        }
    }
}

fn eval_binary(op: BinOp, l: &Expr, r: &Expr, row: &[Datum]) -> Result<Datum> {
    let a = l.eval(row)?;
    binary(op, a, r.eval(row)?)
}

fn eval_not(e: &Expr, row: &[Datum]) -> Result<Datum> {
    Ok(match e.eval(row)?.truth()? {
        None => Datum::Null,
        Some(b) => Datum::Bool(!b),
    })
}

fn eval_is_null(e: &Expr, negated: bool, row: &[Datum]) -> Result<Datum> {
    Ok(Datum::Bool(e.eval(row)?.is_null() != negated))
}

fn eval_cast(e: &Expr, ty: &Type, row: &[Datum]) -> Result<Datum> {
    cast(e.eval(row)?, ty)
}

fn negate(e: &Expr, row: &[Datum]) -> Result<Datum> {
    Ok(match e.eval(row)? {
        Datum::Null => Datum::Null,
        Datum::Int(i) => Datum::Int(i.checked_neg().ok_or_else(int_overflow)?),
        Datum::Float(f) => Datum::Float(-f),
        Datum::Decimal(d) => Datum::Decimal(-d),
        Datum::Interval(i) => Datum::Interval(crate::types::Interval {
            months: i.months.checked_neg().ok_or_else(int_overflow)?,
            days: i.days.checked_neg().ok_or_else(int_overflow)?,
            micros: i.micros.checked_neg().ok_or_else(int_overflow)?,
        }),
        other => return Err(mismatch("-", &other)),
    })
}

fn eval_and(l: &Expr, r: &Expr, row: &[Datum]) -> Result<Datum> {
    let a = l.eval(row)?.truth()?;
    if a == Some(false) {
        return Ok(Datum::Bool(false));
    }
    Ok(match (a, r.eval(row)?.truth()?) {
        (_, Some(false)) => Datum::Bool(false),
        (Some(true), Some(true)) => Datum::Bool(true),
        _ => Datum::Null,
    })
}

fn eval_or(l: &Expr, r: &Expr, row: &[Datum]) -> Result<Datum> {
    let a = l.eval(row)?.truth()?;
    if a == Some(true) {
        return Ok(Datum::Bool(true));
    }
    Ok(match (a, r.eval(row)?.truth()?) {
        (_, Some(true)) => Datum::Bool(true),
        (Some(false), Some(false)) => Datum::Bool(false),
        _ => Datum::Null,
    })
}

fn eval_is_distinct(l: &Expr, r: &Expr, negated: bool, row: &[Datum]) -> Result<Datum> {
    let (a, b) = (l.eval(row)?, r.eval(row)?);
    let same = match (a.is_null(), b.is_null()) {
        (true, true) => true,
        (false, false) => a.compare(&b) == Some(Ordering::Equal),
        _ => false,
    };
    Ok(Datum::Bool(same == negated))
}

fn eval_in_list(e: &Expr, list: &[Expr], negated: bool, row: &[Datum]) -> Result<Datum> {
    let v = e.eval(row)?;
    // Nothing is in an empty list, not even NULL: `NULL IN (SELECT … WHERE false)` is false.
    if list.is_empty() {
        return Ok(Datum::Bool(negated));
    }
    if v.is_null() {
        return Ok(Datum::Null);
    }
    let mut saw_null = false;
    for item in list {
        let x = item.eval(row)?;
        if x.is_null() {
            saw_null = true;
        } else if v.compare(&x) == Some(Ordering::Equal) {
            return Ok(Datum::Bool(!negated));
        }
    }
    Ok(if saw_null {
        Datum::Null
    } else {
        Datum::Bool(negated)
    })
}

fn eval_like(
    expr: &Expr,
    pattern: &Expr,
    negated: bool,
    case_insensitive: bool,
    row: &[Datum],
) -> Result<Datum> {
    Ok(match (expr.eval(row)?, pattern.eval(row)?) {
        (Datum::String(s), Datum::String(p)) => {
            let m = if case_insensitive {
                like(&s.to_lowercase(), &p.to_lowercase())
            } else {
                like(&s, &p)
            };
            Datum::Bool(m != negated)
        }
        (Datum::Null, _) | (_, Datum::Null) => Datum::Null,
        (other, _) => return Err(mismatch("LIKE", &other)),
    })
}

fn eval_case(
    operand: Option<&Expr>,
    whens: &[(Expr, Expr)],
    otherwise: Option<&Expr>,
    row: &[Datum],
) -> Result<Datum> {
    let op = operand.map(|o| o.eval(row)).transpose()?;
    for (cond, result) in whens {
        let c = cond.eval(row)?;
        let hit = match &op {
            Some(v) => !v.is_null() && !c.is_null() && v.compare(&c) == Some(Ordering::Equal),
            None => c.truth()? == Some(true),
        };
        if hit {
            return result.eval(row);
        }
    }
    match otherwise {
        Some(e) => e.eval(row),
        None => Ok(Datum::Null),
    }
}

fn eval_call(f: Func, args: &[Expr], row: &[Datum]) -> Result<Datum> {
    let vals = args
        .iter()
        .map(|a| a.eval(row))
        .collect::<Result<Vec<_>>>()?;
    functions::call(f, vals)
}

fn int_overflow() -> Error {
    Error::NumericOutOfRange("integer out of range".into())
}

fn mismatch(op: &str, d: &Datum) -> Error {
    Error::DatatypeMismatch(format!(
        "unsupported operand type for {op}: {}",
        d.natural_type()
    ))
}

/// Applies a binary operator to two values.
pub fn binary(op: BinOp, a: Datum, b: Datum) -> Result<Datum> {
    use Datum::*;
    if a.is_null() || b.is_null() {
        return Ok(Null);
    }
    let cmp = |o: fn(Ordering) -> bool| -> Result<Datum> {
        match a.compare(&b) {
            Some(ord) => Ok(Bool(o(ord))),
            None => Err(Error::DatatypeMismatch(format!(
                "unsupported comparison: {} and {}",
                a.natural_type(),
                b.natural_type()
            ))),
        }
    };
    match op {
        BinOp::Eq => return cmp(|o| o == Ordering::Equal),
        BinOp::NotEq => return cmp(|o| o != Ordering::Equal),
        BinOp::Lt => return cmp(|o| o == Ordering::Less),
        BinOp::LtEq => return cmp(|o| o != Ordering::Greater),
        BinOp::Gt => return cmp(|o| o == Ordering::Greater),
        BinOp::GtEq => return cmp(|o| o != Ordering::Less),
        BinOp::Concat => {
            return Ok(match (a, b) {
                (Bytes(mut x), Bytes(y)) => {
                    x.extend_from_slice(&y);
                    Bytes(x)
                }
                (Json(serde_json::Value::Array(mut x)), Json(y)) => {
                    match y {
                        serde_json::Value::Array(y) => x.extend(y),
                        y => x.push(y),
                    }
                    Json(serde_json::Value::Array(x))
                }
                (Json(serde_json::Value::Object(mut x)), Json(serde_json::Value::Object(y))) => {
                    x.extend(y);
                    Json(serde_json::Value::Object(x))
                }
                (x, y) => String(format!("{x}{y}")),
            })
        }
        BinOp::JsonGet | BinOp::JsonGetText => {
            let Json(j) = a else {
                return Err(mismatch("->", &a));
            };
            let got = match (&j, &b) {
                (serde_json::Value::Object(m), String(k)) => m.get(k).cloned(),
                (serde_json::Value::Array(v), Int(i)) => {
                    let idx = if *i < 0 { v.len() as i64 + i } else { *i };
                    usize::try_from(idx).ok().and_then(|i| v.get(i)).cloned()
                }
                _ => None,
            };
            return Ok(match got {
                None => Null,
                Some(v) if op == BinOp::JsonGet => Json(v),
                Some(serde_json::Value::String(s)) => String(s),
                Some(serde_json::Value::Null) => Null,
                Some(v) => String(crate::types::format_json(&v)),
            });
        }
        _ => {}
    }
    Ok(match (a, b) {
        (Int(x), Int(y)) => Int(match op {
            BinOp::Add => x.checked_add(y).ok_or_else(int_overflow)?,
            BinOp::Sub => x.checked_sub(y).ok_or_else(int_overflow)?,
            BinOp::Mul => x.checked_mul(y).ok_or_else(int_overflow)?,
            BinOp::Div => {
                if y == 0 {
                    return Err(Error::DivisionByZero);
                }
                x.checked_div(y).ok_or_else(int_overflow)?
            }
            BinOp::Mod => {
                if y == 0 {
                    return Err(Error::DivisionByZero);
                }
                x.checked_rem(y).unwrap_or(0)
            }
            _ => unreachable!("comparisons handled above"),
        }),
        (Float(x), Float(y)) => float_op(op, x, y)?,
        (Int(x), Float(y)) => float_op(op, x as f64, y)?,
        (Float(x), Int(y)) => float_op(op, x, y as f64)?,
        (Decimal(x), Decimal(y)) => decimal_op(op, x, y)?,
        (Int(x), Decimal(y)) => decimal_op(op, x.into(), y)?,
        (Decimal(x), Int(y)) => decimal_op(op, x, y.into())?,
        (Float(x), Decimal(y)) => float_op(op, x, dec_to_f64(&y))?,
        (Decimal(x), Float(y)) => float_op(op, dec_to_f64(&x), y)?,
        (a, b) => functions::datetime_arith(op, a, b)?,
    })
}

fn float_op(op: BinOp, x: f64, y: f64) -> Result<Datum> {
    let r = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => {
            if y == 0.0 {
                return Err(Error::DivisionByZero);
            }
            x / y
        }
        BinOp::Mod => {
            if y == 0.0 {
                return Err(Error::DivisionByZero);
            }
            x % y
        }
        _ => unreachable!("comparisons handled above"),
    };
    // Finite operands giving an infinite result overflowed (Postgres: 22003).
    if r.is_infinite() && x.is_finite() && y.is_finite() {
        return Err(Error::NumericOutOfRange(
            "value out of range: overflow".into(),
        ));
    }
    Ok(Datum::Float(r))
}

fn decimal_op(op: BinOp, x: Decimal, y: Decimal) -> Result<Datum> {
    let out = match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Div => {
            if y.is_zero() {
                return Err(Error::DivisionByZero);
            }
            x.checked_div(y).map(|d| d.normalize())
        }
        BinOp::Mod => {
            if y.is_zero() {
                return Err(Error::DivisionByZero);
            }
            x.checked_rem(y)
        }
        _ => unreachable!("comparisons handled above"),
    };
    out.map(Datum::Decimal)
        .ok_or_else(|| Error::NumericOutOfRange("numeric value out of range".into()))
}

/// SQL LIKE: `%` any run, `_` one character, `\` escapes.
pub fn like(s: &str, p: &str) -> bool {
    fn go(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(&s[i..], rest)),
            Some(('_', rest)) => !s.is_empty() && go(&s[1..], rest),
            Some(('\\', rest)) if !rest.is_empty() => {
                s.first() == Some(&rest[0]) && go(&s[1..], &rest[1..])
            }
            Some((c, rest)) => s.first() == Some(c) && go(&s[1..], rest),
        }
    }
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = p.chars().collect();
    go(&s, &p)
}

/// `d` as a value of type `ty`, if the cast keeps it equal (a key column can only match
/// such a value; `2.5` cast to an integer, or a string cut to fit, cannot match anything).
pub fn exact_cast(d: &Datum, ty: &Type) -> Option<Datum> {
    cast(d.clone(), ty)
        .ok()
        .filter(|x| x.compare(d) == Some(std::cmp::Ordering::Equal))
}

/// Converts a value to a type, as `CAST` and assignment to a column do.
pub fn cast(d: Datum, ty: &Type) -> Result<Datum> {
    use Datum::*;
    if d.is_null() {
        return Ok(Null);
    }
    let out_of_range = || Error::NumericOutOfRange(format!("value out of range for {ty}"));
    Ok(match (ty, d) {
        (Type::Unknown, d) => d,
        (Type::Bool, Bool(b)) => Bool(b),
        (Type::Bool, Int(i)) => Bool(i != 0),
        (Type::Bool, String(s)) => Bool(parse_bool(&s)?),
        (t, Int(i)) if t.is_int() => Int(check_int_width(i, t)?),
        (t, Float(f)) if t.is_int() => {
            // i64::MAX as f64 is 2^63, itself out of range.
            if !f.is_finite()
                || f.round() < i64::MIN as f64
                || f.round() >= 9.223_372_036_854_776e18
            {
                return Err(out_of_range());
            }
            Int(check_int_width(f.round_ties_even() as i64, t)?)
        }
        (t, Decimal(d)) if t.is_int() => {
            use rust_decimal::prelude::ToPrimitive;
            let r =
                d.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
            Int(check_int_width(r.to_i64().ok_or_else(out_of_range)?, t)?)
        }
        (t, Bool(b)) if t.is_int() => Int(b as i64),
        (t, String(s)) if t.is_int() => {
            let i = s.trim().parse::<i64>().map_err(|_| {
                Error::InvalidTextRepresentation(format!(
                    "invalid input syntax for type {}: \"{s}\"",
                    ty.pg_name()
                ))
            })?;
            Int(check_int_width(i, t)?)
        }
        (Type::Float4, v) => match cast(v, &Type::Float8)? {
            Float(f) => {
                let narrow = f as f32;
                if f.is_finite() && (narrow.is_infinite() || (narrow == 0.0 && f != 0.0)) {
                    return Err(Error::NumericOutOfRange(format!(
                        "value out of range: {} for type real",
                        if narrow.is_infinite() {
                            "overflow"
                        } else {
                            "underflow"
                        }
                    )));
                }
                Float(narrow as f64)
            }
            other => other,
        },
        (Type::Float8, Float(f)) => Float(f),
        (Type::Float8, Int(i)) => Float(i as f64),
        (Type::Float8, Decimal(d)) => Float(dec_to_f64(&d)),
        (Type::Float8, String(s)) => Float(parse_float(&s)?),
        (Type::Decimal { precision, scale }, v) => {
            let d = match v {
                Decimal(d) => d,
                Int(i) => i.into(),
                Float(f) => {
                    use rust_decimal::prelude::FromPrimitive;
                    rust_decimal::Decimal::from_f64(f).ok_or_else(|| {
                        Error::NumericOutOfRange(format!("{f} is out of range for numeric"))
                    })?
                }
                String(s) => parse_decimal(&s)?,
                other => return Err(cast_error(&other, ty)),
            };
            Decimal(fit_decimal(d, *precision, *scale)?)
        }
        (Type::String { max_len, fixed }, v) => {
            let s = match v {
                String(s) => s,
                other => other.to_pg_text().unwrap_or_default(),
            };
            String(fit_string(s, *max_len, *fixed, ty)?)
        }
        (Type::Bytes, Bytes(b)) => Bytes(b),
        (Type::Bytes, String(s)) => Bytes(parse_bytea(&s)?),
        (Type::Date, v) => Date(functions::to_date(v)?),
        (Type::Timestamp, v) => Timestamp(functions::to_timestamp(v)?),
        (Type::TimestampTz, v) => TimestampTz(functions::to_timestamptz(v)?),
        (Type::Interval, Interval(i)) => Interval(i),
        (Type::Interval, String(s)) => Interval(functions::parse_interval(&s)?),
        (Type::Uuid, Uuid(u)) => Uuid(u),
        (Type::Uuid, String(s)) => Uuid(uuid::Uuid::parse_str(s.trim()).map_err(|_| {
            Error::InvalidTextRepresentation(format!("invalid input syntax for type uuid: \"{s}\""))
        })?),
        (Type::Uuid, Bytes(b)) if b.len() == 16 => {
            Uuid(uuid::Uuid::from_slice(&b).map_err(|_| cast_error(&Bytes(b.clone()), ty))?)
        }
        (Type::Jsonb, Json(j)) => Json(j),
        (Type::Jsonb, String(s)) => Json(serde_json::from_str(&s).map_err(|e| {
            Error::InvalidTextRepresentation(format!("invalid input syntax for type json: {e}"))
        })?),
        (_, v) => return Err(cast_error(&v, ty)),
    })
}

fn cast_error(d: &Datum, ty: &Type) -> Error {
    Error::DatatypeMismatch(format!(
        "cannot cast {} to {}",
        d.natural_type().pg_name(),
        ty.pg_name()
    ))
}

fn check_int_width(i: i64, t: &Type) -> Result<i64> {
    let ok = match t {
        Type::Int2 => i16::try_from(i).is_ok(),
        Type::Int4 => i32::try_from(i).is_ok(),
        _ => true,
    };
    if ok {
        Ok(i)
    } else {
        Err(Error::NumericOutOfRange(format!(
            "{} out of range",
            match t {
                Type::Int2 => "smallint",
                _ => "integer",
            }
        )))
    }
}

/// Parses Postgres boolean text (`t`, `true`, `yes`, `on`, `1`, and their opposites).
pub fn parse_bool(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
        _ => Err(Error::InvalidTextRepresentation(format!(
            "invalid input syntax for type boolean: \"{s}\""
        ))),
    }
}

/// Parses float text, including `NaN` and `Infinity`.
pub fn parse_float(s: &str) -> Result<f64> {
    match s.trim().to_ascii_lowercase().as_str() {
        "nan" => Ok(f64::NAN),
        "infinity" | "inf" | "+infinity" => Ok(f64::INFINITY),
        "-infinity" | "-inf" => Ok(f64::NEG_INFINITY),
        t => {
            let f: f64 = t.parse().map_err(|_| {
                Error::InvalidTextRepresentation(format!(
                    "invalid input syntax for type double precision: \"{s}\""
                ))
            })?;
            // Written digits too large for a double ("1e400") overflow, as in Postgres.
            if f.is_infinite() {
                return Err(Error::NumericOutOfRange(format!(
                    "\"{s}\" is out of range for type double precision"
                )));
            }
            Ok(f)
        }
    }
}

/// Parses decimal text (plain or scientific notation).
pub fn parse_decimal(s: &str) -> Result<Decimal> {
    use std::str::FromStr;
    let t = s.trim();
    Decimal::from_str(t)
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| {
            Error::InvalidTextRepresentation(format!(
                "invalid input syntax for type numeric: \"{s}\""
            ))
        })
}

/// Rounds a decimal to a column's scale and checks its precision.
pub fn fit_decimal(d: Decimal, precision: Option<u32>, scale: Option<u32>) -> Result<Decimal> {
    let Some(p) = precision else {
        return Ok(d);
    };
    let s = scale.unwrap_or(0);
    let mut r = d.round_dp_with_strategy(s, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    r.rescale(s);
    let int_digits = r.trunc().abs().to_string().trim_start_matches('0').len() as u32;
    if int_digits > p.saturating_sub(s) {
        return Err(Error::NumericOutOfRange(format!(
            "numeric field overflow: a field with precision {p}, scale {s} must round to an \
             absolute value less than 10^{}",
            p - s
        )));
    }
    Ok(r)
}

fn fit_string(s: String, max_len: Option<u32>, fixed: bool, ty: &Type) -> Result<String> {
    let Some(n) = max_len else {
        return Ok(s);
    };
    let len = s.chars().count();
    if len > n as usize {
        // Postgres allows trailing blanks beyond the limit; they are cut.
        let cut: String = s.chars().take(n as usize).collect();
        if s.chars().skip(n as usize).all(|c| c == ' ') {
            return Ok(cut);
        }
        return Err(Error::StringTooLong(
            ty.pg_name().to_string() + &format!("({n})"),
        ));
    }
    if fixed && len < n as usize {
        let mut padded = s;
        padded.extend(std::iter::repeat_n(' ', n as usize - len));
        return Ok(padded);
    }
    Ok(s)
}

/// Parses bytea text: `\x` hex or the escape format.
pub fn parse_bytea(s: &str) -> Result<Vec<u8>> {
    let bad = || {
        Error::InvalidTextRepresentation(format!("invalid input syntax for type bytea: \"{s}\""))
    };
    if let Some(hex) = s.strip_prefix("\\x") {
        if hex.len() % 2 != 0 {
            return Err(bad());
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8).ok_or_else(bad);
        return hex
            .as_bytes()
            .chunks(2)
            .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else {
                let oct = s.get(i + 1..i + 4).ok_or_else(bad)?;
                if !oct.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
                    return Err(bad());
                }
                out.push(u8::from_str_radix(oct, 8).map_err(|_| bad())?);
                i += 4;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_valued_logic() {
        let null = Box::new(Expr::Literal(Datum::Null));
        let f = Box::new(Expr::Literal(Datum::Bool(false)));
        let t = Box::new(Expr::Literal(Datum::Bool(true)));
        assert_eq!(
            Expr::And(null.clone(), f.clone()).eval(&[]).ok(),
            Some(Datum::Bool(false))
        );
        assert_eq!(
            Expr::Or(null.clone(), t).eval(&[]).ok(),
            Some(Datum::Bool(true))
        );
        assert_eq!(Expr::Or(null.clone(), f).eval(&[]).ok(), Some(Datum::Null));
        let inl = Expr::InList(
            Box::new(Expr::Literal(Datum::Int(3))),
            vec![Expr::Literal(Datum::Int(1)), *null],
            false,
        );
        assert_eq!(inl.eval(&[]).ok(), Some(Datum::Null));
    }

    #[test]
    fn like_and_casts() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "_ello"));
        assert!(!like("hello", "h_o"));
        assert!(like("50%", "50\\%"));
        let dec = Type::Decimal {
            precision: Some(5),
            scale: Some(2),
        };
        assert_eq!(
            cast(Datum::String("1.005".into()), &dec)
                .ok()
                .map(|d| d.to_string()),
            Some("1.01".into())
        );
        assert!(cast(Datum::Int(1000), &dec).is_err());
        assert!(cast(Datum::Int(70000), &Type::Int2).is_err());
        let vc = Type::String {
            max_len: Some(3),
            fixed: false,
        };
        assert!(cast(Datum::String("abcd".into()), &vc).is_err());
        assert_eq!(parse_bytea("\\x00ff").ok(), Some(vec![0, 255]));
    }
}
