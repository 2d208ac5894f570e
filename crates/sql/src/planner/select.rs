//! Planning queries: WITH, set operations, VALUES, FROM items and joins, grouping, the select
//! list, ORDER BY and LIMIT.

use super::expr::{aggregate_func, collect_aggregates};
use super::*;

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
    /// Plans a query (SELECT, VALUES, set operations, WITH).
    pub fn plan_query<'s>(&'s mut self, q: &'s ast::Query) -> BoxFuture<'s, Result<Planned>> {
        crate::stack::deep(async move { self.plan_query_inner(q).await })
    }

    async fn plan_query_inner(&mut self, q: &ast::Query) -> Result<Planned> {
        let saved_ctes = self.ctes.len();
        if let Some(with) = &q.with {
            if with.recursive {
                return Err(Error::FeatureNotSupported("WITH RECURSIVE".into()));
            }
            for cte in &with.cte_tables {
                let planned = self.plan_query(&cte.query).await?;
                let rows = crate::exec::collect(planned.node, &mut self.exec()).await?;
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
                let l = crate::stack::deep_boxed(self.plan_body(left, &[])).await?;
                let r = crate::stack::deep_boxed(self.plan_body(right, &[])).await?;
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
            ast::TableFactor::Table {
                name,
                alias,
                args: Some(args),
                ..
            } => self.table_function(name, alias.as_ref(), &args.args).await,
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
                        return Ok(rows_named(alias_name.unwrap_or(n), cols, rows));
                    }
                }
                // As in Postgres, pg_catalog is searched before the current schema.
                if let [vt] = parts.as_slice() {
                    let pg = crate::internal::PG_CATALOG;
                    if let Some((cols, rows)) = crate::internal::table(self, pg, vt).await? {
                        return Ok(rows_named(
                            alias_name.unwrap_or_else(|| vt.clone()),
                            cols,
                            rows,
                        ));
                    }
                }
                if let [.., schema, vt] = parts.as_slice() {
                    if crate::internal::is_virtual_schema(schema) {
                        let Some((cols, rows)) = crate::internal::table(self, schema, vt).await?
                        else {
                            return Err(Error::UndefinedTable(name.to_string()));
                        };
                        return Ok(rows_named(
                            alias_name.unwrap_or_else(|| vt.clone()),
                            cols,
                            rows,
                        ));
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
                        table: Box::new(table),
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
        let mut left = crate::stack::deep_boxed(self.plan_factor(&twj.relation)).await?;
        for j in &twj.joins {
            let right = crate::stack::deep_boxed(self.plan_factor(&j.relation)).await?;
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
        // USING columns appear once; the right copy is hidden from `*`.
        for name in &using {
            if let Some(c) = columns[lw..].iter_mut().find(|c| &c.name == name) {
                c.hidden = true;
            }
        }
        Ok(Planned {
            node: join_node(left.node, right.node, kind, on, lw, rw)?,
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

impl Context<'_> {
    /// A function in FROM: `generate_series(start, stop [, step])` over integers.
    async fn table_function(
        &mut self,
        name: &ast::ObjectName,
        alias: Option<&ast::TableAlias>,
        args: &[ast::FunctionArg],
    ) -> Result<Planned> {
        let fname = name_parts(name).pop().unwrap_or_default();
        if fname != "generate_series" {
            return Err(Error::UndefinedFunction(format!("{fname}()")));
        }
        let mut bound = Vec::new();
        for a in args {
            let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) = a else {
                return Err(Error::FeatureNotSupported(format!("argument {a}")));
            };
            self.hint(x, &Type::Int8);
            // Arguments may name columns of the query around a subquery (computed per row).
            bound.push(self.bind(x, &Scope::default()).await?);
        }
        if !(2..=3).contains(&bound.len()) {
            return Err(Error::UndefinedFunction(format!(
                "generate_series() with {} arguments",
                bound.len()
            )));
        }
        let table = alias
            .map(|a| ident(&a.name))
            .unwrap_or_else(|| fname.clone());
        let column = alias
            .and_then(|a| a.columns.first())
            .map(|c| ident(&c.name))
            .or_else(|| alias.map(|a| ident(&a.name)))
            .unwrap_or(fname);
        let columns = vec![Column {
            name: column,
            table: Some(table),
            ty: Type::Int8,
            hidden: false,
        }];
        Ok(Planned {
            node: Node::Series { args: bound },
            columns,
        })
    }
}

/// Rows computed before the query (a CTE's, a virtual table's) read as table `table`.
fn rows_named(table: String, columns: Vec<Column>, rows: Vec<Vec<Datum>>) -> Planned {
    let columns = columns
        .into_iter()
        .map(|c| Column {
            table: Some(table.clone()),
            ..c
        })
        .collect();
    Planned {
        node: Node::Rows { rows },
        columns,
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
    let mut cond = Vec::with_capacity(names.len());
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
        cond.push(eq);
    }
    super::filter::and_all(cond).ok_or_else(|| Error::Syntax("USING needs columns".into()))
}

/// The name Postgres gives an unaliased select item.
fn output_name(e: &ast::Expr) -> String {
    crate::stack::grow(|| match e {
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
    })
}
