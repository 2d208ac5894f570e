//! Binding expressions: names against the scope, operators with the coercions that make their
//! operands comparable, function calls, and `$n` placeholders with the types they learn from
//! where they appear.

use super::*;

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
    crate::stack::grow(|| match e {
        Expr::Literal(d) => d.natural_type(),
        Expr::Column(i) => cols.get(*i).map(|c| c.ty.clone()).unwrap_or(Type::Unknown),
        Expr::Outer(_, ty) => ty.clone(),
        Expr::Subquery(sub) => sub.ty.clone(),
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
    })
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

pub(super) fn aggregate_func(name: &str) -> Option<AggFunc> {
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
pub(super) fn collect_aggregates(e: &ast::Expr, out: &mut Vec<ast::Expr>) {
    crate::stack::grow(|| {
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
    })
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

    /// A column of the query around the subquery being planned, or `err` (the subquery's
    /// own failure to find it) when there is none.
    fn outer_column(&mut self, table: Option<&str>, name: &str, err: Error) -> Result<Expr> {
        if !matches!(err, Error::UndefinedColumn(_)) {
            return Err(err);
        }
        let Some(outer) = self.outer.last() else {
            return Err(err);
        };
        match outer.resolve(table, name) {
            Ok(i) if outer.grouped.is_none() => {
                let ty = outer.columns[i].ty.clone();
                self.correlated = true;
                Ok(Expr::Outer(i, ty))
            }
            Err(e @ Error::AmbiguousColumn(_)) => Err(e),
            _ => Err(err),
        }
    }

    /// Plans subquery `q` of an expression bound against `scope`; returns the plan and whether
    /// it is correlated (refers to `scope`'s row).
    async fn plan_subquery(&mut self, q: &ast::Query, scope: &Scope) -> Result<(Planned, bool)> {
        self.outer.push(scope.clone());
        let saved = std::mem::replace(&mut self.correlated, false);
        let planned = self.plan_query(q).await;
        self.outer.pop();
        let correlated = std::mem::replace(&mut self.correlated, saved);
        Ok((planned?, correlated))
    }

    /// Binds an expression against a scope.
    pub fn bind<'s>(
        &'s mut self,
        e: &'s ast::Expr,
        scope: &'s Scope,
    ) -> BoxFuture<'s, Result<Expr>> {
        crate::stack::deep(async move { self.bind_inner(e, scope).await })
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
                        _ => self.outer_column(None, &name, err)?,
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
                match scope.resolve(Some(&t), &n) {
                    Ok(c) => Expr::Column(c),
                    Err(err) => self.outer_column(Some(&t), &n, err)?,
                }
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
                        Expr::Literal(Datum::Int(i)) => {
                            Expr::Literal(Datum::Int(i.checked_neg().ok_or_else(|| {
                                Error::NumericOutOfRange("bigint out of range".into())
                            })?))
                        }
                        Expr::Literal(Datum::Decimal(d)) => Expr::Literal(Datum::Decimal(-d)),
                        x => Expr::Neg(b(x)),
                    },
                    ast::UnaryOperator::Plus => x,
                    ast::UnaryOperator::Not => Expr::Not(b(x)),
                    other => return Err(Error::FeatureNotSupported(format!("operator {other}"))),
                }
            }
            // `a OPERATOR(pg_catalog.~) b` (psql's spelling) is `a ~ b`.
            E::BinaryOp {
                left,
                op: ast::BinaryOperator::PGCustomBinaryOperator(parts),
                right,
            } => {
                let op = match parts.as_slice() {
                    [schema, op] if schema == "pg_catalog" => op.as_str(),
                    [op] => op.as_str(),
                    _ => "",
                };
                let op = match op {
                    "~" => ast::BinaryOperator::PGRegexMatch,
                    "~*" => ast::BinaryOperator::PGRegexIMatch,
                    "!~" => ast::BinaryOperator::PGRegexNotMatch,
                    "!~*" => ast::BinaryOperator::PGRegexNotIMatch,
                    "=" => ast::BinaryOperator::Eq,
                    "<>" => ast::BinaryOperator::NotEq,
                    _ => {
                        return Err(Error::FeatureNotSupported(format!(
                            "operator OPERATOR({})",
                            parts.join(".")
                        )))
                    }
                };
                let e = E::BinaryOp {
                    left: left.clone(),
                    op,
                    right: right.clone(),
                };
                self.bind(&e, scope).await?
            }
            // `x = ANY(array)`, over an array's text form.
            E::AnyOp {
                left,
                compare_op: ast::BinaryOperator::Eq,
                right,
                ..
            } => {
                let x = self.bind(left, scope).await?;
                let arr = self.bind(right, scope).await?;
                fold(Expr::Call(Func::ArrayContains, vec![arr, x]))?
            }
            // `array[i]`.
            E::CompoundFieldAccess { root, access_chain } => match access_chain.as_slice() {
                [ast::AccessExpr::Subscript(ast::Subscript::Index { index })] => {
                    let arr = self.bind(root, scope).await?;
                    let i = self.bind(index, scope).await?;
                    fold(Expr::Call(Func::ArrayElement, vec![arr, i]))?
                }
                _ => return Err(Error::FeatureNotSupported(format!("expression {e}"))),
            },
            // Collations: bini compares strings bytewise whatever the collation named.
            E::Collate { expr, .. } => self.bind(expr, scope).await?,
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
                        let (planned, correlated) = self.plan_subquery(q, scope).await?;
                        if planned.columns.len() != 1 {
                            return Err(Error::Syntax("subquery has too many columns".into()));
                        }
                        if correlated {
                            return Ok(Expr::Subquery(Box::new(Subquery {
                                node: planned.node,
                                kind: SubqueryKind::In {
                                    expr: b(x),
                                    negated: *negated,
                                },
                                ty: Type::Bool,
                            })));
                        }
                        crate::exec::collect(planned.node, &mut self.exec())
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
                let (planned, correlated) = self.plan_subquery(subquery, scope).await?;
                let sub = Expr::Subquery(Box::new(Subquery {
                    node: planned.node,
                    kind: SubqueryKind::Exists { negated: *negated },
                    ty: Type::Bool,
                }));
                if correlated {
                    return Ok(sub);
                }
                resolve_subqueries(&sub, &[], &mut self.exec()).await?
            }
            E::Subquery(q) => {
                let (planned, correlated) = self.plan_subquery(q, scope).await?;
                if planned.columns.len() != 1 {
                    return Err(Error::Syntax("subquery must return only one column".into()));
                }
                let sub = Expr::Subquery(Box::new(Subquery {
                    node: planned.node,
                    kind: SubqueryKind::Scalar,
                    ty: planned.columns[0].ty.clone(),
                }));
                if correlated {
                    return Ok(sub);
                }
                let v = resolve_subqueries(&sub, &[], &mut self.exec())
                    .await?
                    .eval(&[])?;
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
            ast::FunctionArguments::Subquery(q) if name == "array" => {
                let (planned, correlated) = self.plan_subquery(q, scope).await?;
                if planned.columns.len() != 1 {
                    return Err(Error::Syntax("subquery must return only one column".into()));
                }
                let sub = Expr::Subquery(Box::new(Subquery {
                    node: planned.node,
                    kind: SubqueryKind::Array,
                    ty: Type::TEXT,
                }));
                if correlated {
                    return Ok(sub);
                }
                return Ok(Expr::Literal(
                    resolve_subqueries(&sub, &[], &mut self.exec())
                        .await?
                        .eval(&[])?,
                ));
            }
            ast::FunctionArguments::Subquery(_) => {
                return Err(Error::FeatureNotSupported(format!("{name}(subquery)")))
            }
        }
        match name.as_str() {
            // Definitions the catalog holds: a CASE over the current database's objects.
            "pg_get_indexdef" | "pg_get_constraintdef" if !args.is_empty() => {
                let defs = if name == "pg_get_indexdef" {
                    crate::internal::index_definitions(self).await?
                } else {
                    crate::internal::constraint_definitions(self).await?
                };
                return Ok(Expr::Case {
                    operand: Some(Box::new(args.swap_remove(0))),
                    whens: defs
                        .into_iter()
                        .map(|(oid, def)| {
                            (
                                Expr::Literal(Datum::Int(oid)),
                                Expr::Literal(Datum::String(def)),
                            )
                        })
                        .collect(),
                    otherwise: None,
                });
            }
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
