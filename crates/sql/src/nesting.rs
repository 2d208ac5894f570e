//! Deep statements: how bini runs an ORM's 100,000-term `OR` chain and refuses a
//! 10,000-level nested expression without ever overflowing a thread's stack.
//!
//! Every walk over a statement (parsing, binding, rendering, evaluating, dropping) recurses
//! once per level of nesting. Nesting comes from two places:
//!
//! - **Brackets and prefixes** (`(((…)))`, `NOT NOT …`, subqueries): the parser recurses for
//!   each, and its recursion counter refuses more than [`PARSER_RECURSION_LIMIT`] levels.
//! - **Chains of infix and postfix operators** (`a OR b OR c …`, `1 + 1 + …`, `x::t::t`,
//!   `SELECT … UNION SELECT …`): the parser builds them in a loop, left-deep, so their depth
//!   is bounded by nothing but the statement's length.
//!
//! [`normalize`] runs on every parsed statement long enough to be deep (more than
//! [`SHALLOW_TOKENS`] tokens), before anything else walks it:
//!
//! 1. chains of one `AND` or `OR` operator are rebuilt as balanced trees (depth log₂ n): SQL
//!    leaves the evaluation order of these associative operators to the implementation, so a
//!    100,000-term `OR` is 17 levels deep and runs;
//! 2. any expression still deeper than [`MAX_EXPR_DEPTH`] (or a set-operation chain longer
//!    than it) makes the statement fail with SQLSTATE 54001; the tree is then taken apart
//!    iteratively ([`dismantle`]), since even dropping it recursively would overflow.
//!
//! What is left is at most [`MAX_EXPR_DEPTH`] deep. The walks that recurse through the bound
//! statement (binding, planning, evaluation, execution) grow their stack on demand through
//! [`crate::stack`], so that depth is always within reach whatever thread runs them.

use std::ops::ControlFlow;

use sqlparser::ast::{self, BinaryOperator, Expr, SetExpr, Statement, VisitMut, VisitorMut};

use crate::error::{Error, Result};

/// Statements up to this many tokens are left as parsed: no expression in them can be deeper
/// than the walks handle on any stack.
pub const SHALLOW_TOKENS: usize = 256;

/// The parser refuses brackets, prefixes and subqueries nested deeper than this (its counter
/// counts parser frames, a few per level); its recursion grows the stack on demand.
pub const PARSER_RECURSION_LIMIT: usize = 4096;

/// The deepest expression (or longest set-operation chain) a statement may hold after
/// `AND`/`OR` chains are balanced. 400 levels of generated, parenthesised `AND`/`OR` are
/// 800 levels here; PostgreSQL's default 2 MB stack stops at a few thousand.
pub const MAX_EXPR_DEPTH: usize = 2048;

/// What a query nested in another counts for in the depth: each level of subquery is
/// several levels of tree (query, body, select, item, expression), all walked recursively.
const QUERY_WEIGHT: usize = 8;

const TOO_DEEP: &str = "expressions and subqueries nested more than 2048 levels deep \
                        (a subquery counts as 8 levels)";

/// Balances the statement's `AND`/`OR` chains and checks its depth; a statement too deep is
/// taken apart and refused with SQLSTATE 54001.
pub fn normalize(mut stmt: Statement) -> Result<Statement> {
    let mut v = Normalizer { depth: 0 };
    match stmt.visit(&mut v) {
        ControlFlow::Continue(()) => Ok(stmt),
        ControlFlow::Break(why) => {
            dismantle(stmt);
            Err(Error::StatementTooComplex(why.to_string()))
        }
    }
}

struct Normalizer {
    /// Expressions entered and not yet left.
    depth: usize,
}

impl VisitorMut for Normalizer {
    type Break = &'static str;

    fn pre_visit_query(&mut self, q: &mut ast::Query) -> ControlFlow<&'static str> {
        self.depth += QUERY_WEIGHT;
        if self.depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(TOO_DEEP);
        }
        let mut chain = 0;
        let mut body = &*q.body;
        while let SetExpr::SetOperation { left, .. } = body {
            chain += 1;
            if chain > MAX_EXPR_DEPTH {
                return ControlFlow::Break(
                    "more than 2048 UNION, INTERSECT or EXCEPT operations in a row",
                );
            }
            body = left;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &mut ast::Query) -> ControlFlow<&'static str> {
        self.depth -= QUERY_WEIGHT;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<&'static str> {
        if let Expr::BinaryOp { left, op, .. } = e {
            let op = op.clone();
            let chained = matches!(op, BinaryOperator::And | BinaryOperator::Or)
                && matches!(&**left, Expr::BinaryOp { op: inner, .. } if *inner == op);
            if chained {
                let chain = std::mem::replace(e, null());
                *e = balanced(chain_terms(chain, &op), &op);
            }
        }
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(TOO_DEEP);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &mut Expr) -> ControlFlow<&'static str> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

fn null() -> Expr {
    Expr::value(ast::Value::Null)
}

/// The operands of a left-deep chain of `op`, left to right, taken apart without recursion.
fn chain_terms(chain: Expr, op: &BinaryOperator) -> Vec<Expr> {
    let mut terms = Vec::new();
    let mut rest = chain;
    loop {
        match rest {
            Expr::BinaryOp { left, op: o, right } if o == *op => {
                terms.push(*right);
                rest = *left;
            }
            other => {
                terms.push(other);
                break;
            }
        }
    }
    terms.reverse();
    terms
}

/// `terms` joined by `op` as a balanced tree, in their order. Inner nodes are bracketed
/// (`(a OR b) OR (c OR d)`), which also tells the normalizer, when it walks down into them,
/// that they are balanced already.
fn balanced(mut terms: Vec<Expr>, op: &BinaryOperator) -> Expr {
    if terms.len() == 1 {
        return terms.pop().expect("one term");
    }
    let right = terms.split_off(terms.len() / 2);
    let side = |t: Vec<Expr>| {
        Box::new(match balanced(t, op) {
            inner @ Expr::BinaryOp { .. } => Expr::Nested(Box::new(inner)),
            term => term,
        })
    };
    Expr::BinaryOp {
        left: side(terms),
        op: op.clone(),
        right: side(right),
    }
}

/// Drops a statement of any depth without recursing down its operator chains: every chain
/// link is detached before the visitor would descend into it and taken apart from a
/// worklist. What the visitor still recurses through is bracket nesting, which the parser
/// bounds.
fn dismantle(stmt: Statement) {
    let mut d = Dismantler::default();
    let mut stmt = stmt;
    let _ = stmt.visit(&mut d);
    drop(stmt);
    while let Some(piece) = d.pending.pop() {
        match piece {
            Piece::Expr(mut e) => {
                d.detach_expr(&mut e);
                let _ = e.visit(&mut d);
            }
            Piece::Set(mut s) => {
                d.detach_set(&mut s);
                let _ = s.visit(&mut d);
            }
        }
    }
}

enum Piece {
    Expr(Box<Expr>),
    Set(Box<SetExpr>),
}

#[derive(Default)]
struct Dismantler {
    pending: Vec<Piece>,
}

impl Dismantler {
    /// Moves the operands an operator chain can nest through out of `e`, onto the worklist.
    fn detach_expr(&mut self, e: &mut Expr) {
        let children: Vec<&mut Box<Expr>> = match e {
            Expr::BinaryOp { left, right, .. }
            | Expr::AnyOp { left, right, .. }
            | Expr::AllOp { left, right, .. }
            | Expr::IsDistinctFrom(left, right)
            | Expr::IsNotDistinctFrom(left, right) => vec![left, right],
            Expr::Like { expr, pattern, .. }
            | Expr::ILike { expr, pattern, .. }
            | Expr::SimilarTo { expr, pattern, .. }
            | Expr::RLike { expr, pattern, .. } => vec![expr, pattern],
            Expr::Between {
                expr, low, high, ..
            } => vec![expr, low, high],
            Expr::AtTimeZone {
                timestamp,
                time_zone,
            } => vec![timestamp, time_zone],
            Expr::UnaryOp { expr, .. }
            | Expr::Nested(expr)
            | Expr::IsNull(expr)
            | Expr::IsNotNull(expr)
            | Expr::IsTrue(expr)
            | Expr::IsNotTrue(expr)
            | Expr::IsFalse(expr)
            | Expr::IsNotFalse(expr)
            | Expr::IsUnknown(expr)
            | Expr::IsNotUnknown(expr)
            | Expr::IsNormalized { expr, .. }
            | Expr::In { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::Collate { expr, .. }
            | Expr::CompoundFieldAccess { root: expr, .. }
            | Expr::JsonAccess { value: expr, .. } => vec![expr],
            _ => Vec::new(),
        };
        for c in children {
            let taken = std::mem::replace(&mut **c, null());
            self.pending.push(Piece::Expr(Box::new(taken)));
        }
    }

    fn detach_set(&mut self, s: &mut SetExpr) {
        if let SetExpr::SetOperation { left, right, .. } = s {
            for side in [left, right] {
                let taken = std::mem::replace(&mut **side, empty_set());
                self.pending.push(Piece::Set(Box::new(taken)));
            }
        }
    }
}

fn empty_set() -> SetExpr {
    SetExpr::Values(ast::Values {
        explicit_row: false,
        value_keyword: false,
        rows: Vec::new(),
    })
}

impl VisitorMut for Dismantler {
    type Break = ();

    fn pre_visit_query(&mut self, q: &mut ast::Query) -> ControlFlow<()> {
        self.detach_set(&mut q.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        self.detach_expr(e);
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<Statement> {
        crate::parse::parse(sql).map(|mut p| p.remove(0).stmt)
    }

    fn depth(e: &Expr) -> usize {
        match e {
            Expr::BinaryOp { left, right, .. } => 1 + depth(left).max(depth(right)),
            Expr::Nested(x) => 1 + depth(x),
            _ => 1,
        }
    }

    fn where_clause(s: &Statement) -> &Expr {
        let Statement::Query(q) = s else {
            panic!("a query")
        };
        let SetExpr::Select(sel) = &*q.body else {
            panic!("a select")
        };
        sel.selection.as_ref().expect("a WHERE clause")
    }

    #[test]
    fn long_or_chains_become_balanced_trees_in_order() {
        let terms: Vec<String> = (0..100_000).map(|i| format!("id = {i}")).collect();
        let sql = format!("select * from t where {}", terms.join(" or "));
        let s = parse(&sql).expect("a 100,000-term OR chain is a normal query");
        let w = where_clause(&s);
        assert!(depth(w) <= 40, "balanced: depth {}", depth(w));
        // The same operands in their order, bracketed.
        assert_eq!(w.to_string().replace(['(', ')'], ""), terms.join(" OR "));
    }

    #[test]
    fn deep_expressions_are_refused_with_54001() {
        assert!(TOO_DEEP.contains(&MAX_EXPR_DEPTH.to_string()));
        let sql = format!("select {}", vec!["1"; 100_000].join(" + "));
        let e = parse(&sql).expect_err("a 100,000-level sum is too deep");
        assert!(matches!(e, Error::StatementTooComplex(_)), "{e:?}");
        let sql = format!("select {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        let e = parse(&sql).expect_err("10,000 brackets are too deep");
        assert!(matches!(e, Error::StatementTooComplex(_)), "{e:?}");
        let sql = vec!["select 1"; 5_000].join(" union all ");
        let e = parse(&sql).expect_err("5,000 UNIONs are too many");
        assert!(matches!(e, Error::StatementTooComplex(_)), "{e:?}");
        let sql = format!("select {}1{}", "(select ".repeat(2_000), ")".repeat(2_000));
        let e = parse(&sql).expect_err("2,000 nested subqueries are too deep");
        assert!(matches!(e, Error::StatementTooComplex(_)), "{e:?}");
    }

    #[test]
    fn moderately_nested_statements_stay_as_written() {
        // 400 levels of parenthesised AND/OR, as a query generator writes them.
        let mut e = "a = 0".to_string();
        for i in 1..400 {
            let op = if i % 2 == 0 { "and" } else { "or" };
            e = format!("({e} {op} a = {i})");
        }
        let sql = format!("select * from t where {e}");
        let s = parse(&sql).expect("400 levels run");
        assert!(depth(where_clause(&s)) >= 400);
        let sql = format!("select {}", vec!["1"; 1_000].join(" + "));
        parse(&sql).expect("a 1,000-term sum runs");
        let sql = format!("select {}1{}", "(select ".repeat(200), ")".repeat(200));
        parse(&sql).expect("200 nested subqueries run");
    }
}
