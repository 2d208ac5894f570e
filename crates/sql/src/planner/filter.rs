//! Where a filter goes: into the scan below it, as its predicate and, when the predicate pins
//! key columns to constants, as point lookups of primary keys or spans of a secondary index.

use super::*;

/// The AND-ed parts of a predicate.
pub fn conjuncts(e: &Expr) -> Vec<&Expr> {
    crate::stack::grow(|| match e {
        Expr::And(a, b) => {
            let mut v = conjuncts(a);
            v.extend(conjuncts(b));
            v
        }
        other => vec![other],
    })
}

/// The conjunction of `parts` (none: no predicate), as a balanced tree: a WHERE clause of
/// 100,000 conjuncts nests 17 levels deep, not 100,000.
pub fn and_all(parts: impl IntoIterator<Item = Expr>) -> Option<Expr> {
    fn balanced(mut parts: Vec<Expr>) -> Expr {
        if parts.len() == 1 {
            return parts.pop().expect("one part");
        }
        let right = parts.split_off(parts.len() / 2);
        Expr::And(Box::new(balanced(parts)), Box::new(balanced(right)))
    }
    let parts: Vec<Expr> = parts.into_iter().collect();
    (!parts.is_empty()).then(|| balanced(parts))
}

/// Places a filter as low as it can go: into a scan (as its filter, and as lookups when it
/// narrows the keys), through a join to the side it names, else as a Filter node.
pub(super) fn push_filter(node: Node, pred: Expr) -> Result<Node> {
    if pred.has_subquery() {
        // Correlated subqueries run in a Filter node, row by row; the rest can go lower.
        let (with, without): (Vec<&Expr>, Vec<&Expr>) =
            conjuncts(&pred).into_iter().partition(|c| c.has_subquery());
        let with = and_all(with.into_iter().cloned());
        let input = match and_all(without.into_iter().cloned()) {
            Some(p) => push_filter(node, p)?,
            None => node,
        };
        return Ok(Node::Filter {
            input: Box::new(input),
            predicate: with.unwrap_or(pred),
        });
    }
    match node.without_lookup_join() {
        Node::Scan {
            table,
            keys: _,
            filter,
            limit: None,
        } => {
            let pred = and_all(filter.into_iter().chain([pred])).expect("one part at least");
            let keys = lookup(&table, &pred)?;
            Ok(Node::Scan {
                table,
                keys,
                filter: Some(pred),
                limit: None,
            })
        }
        Node::Join {
            left,
            right,
            kind,
            on,
            equi: _,
            left_width,
            right_width,
        } if kind != JoinKind::Full => {
            // Conjuncts naming one side only filter that side's rows first, where that keeps
            // the join's meaning (not the side whose rows an outer join keeps unmatched).
            let (mut to_left, mut to_right, mut rest) = (Vec::new(), Vec::new(), Vec::new());
            for c in conjuncts(&pred) {
                match side(c, left_width) {
                    Some(Side::Left) if kind != JoinKind::Right => to_left.push(c.clone()),
                    Some(Side::Right) if kind != JoinKind::Left => {
                        let mut c = c.clone();
                        c.remap(&|i| i - left_width);
                        to_right.push(c);
                    }
                    _ => rest.push(c.clone()),
                }
            }
            let left = match and_all(to_left) {
                Some(p) => push_filter(*left, p)?,
                None => *left,
            };
            let right = match and_all(to_right) {
                Some(p) => push_filter(*right, p)?,
                None => *right,
            };
            // Over an inner join, a condition naming both sides joins them.
            let (on, rest) = if kind == JoinKind::Inner {
                (and_all(on.into_iter().chain(rest)), None)
            } else {
                (on, and_all(rest))
            };
            let join = join_node(left, right, kind, on, left_width, right_width)?;
            Ok(match rest {
                Some(predicate) => Node::Filter {
                    input: Box::new(join),
                    predicate,
                },
                None => join,
            })
        }
        other => Ok(Node::Filter {
            input: Box::new(other),
            predicate: pred,
        }),
    }
}

/// Which input of a join an expression reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// The one side of a join (left rows `left_width` wide) whose columns `e` reads, if it reads
/// columns of exactly one.
fn side(e: &Expr, left_width: usize) -> Option<Side> {
    if e.has_subquery() {
        return None;
    }
    let (mut l, mut r) = (false, false);
    e.walk(&mut |x| {
        if let Expr::Column(i) = x {
            if *i < left_width {
                l = true
            } else {
                r = true
            }
        }
    });
    match (l, r) {
        (true, false) => Some(Side::Left),
        (false, true) => Some(Side::Right),
        _ => None,
    }
}

/// A join of `left` and `right` on `on` (over their concatenated rows): conjuncts of `on`
/// naming one side filter that side first where the join kind allows it, equalities between
/// the sides become hash join keys, and when those keys cover the primary key or leading
/// index columns of a right side that is a table scan, the join looks its rows up.
pub(super) fn join_node(
    left: Node,
    right: Node,
    kind: JoinKind,
    on: Option<Expr>,
    left_width: usize,
    right_width: usize,
) -> Result<Node> {
    let (mut left, mut right) = (left, right);
    let mut rest = Vec::new();
    let mut equi = Vec::new();
    for c in on.iter().flat_map(conjuncts) {
        match side(c, left_width) {
            // An inner join or a right join keeps only left rows that match.
            Some(Side::Left) if matches!(kind, JoinKind::Inner | JoinKind::Right) => {
                left = push_filter(left, c.clone())?;
                continue;
            }
            Some(Side::Right) if matches!(kind, JoinKind::Inner | JoinKind::Left) => {
                let mut c = c.clone();
                c.remap(&|i| i - left_width);
                right = push_filter(right, c)?;
                continue;
            }
            _ => {}
        }
        if let Expr::Binary(BinOp::Eq, a, b) = c {
            let pair = match (side(a, left_width), side(b, left_width)) {
                (Some(Side::Left), Some(Side::Right)) => Some(((**a).clone(), (**b).clone())),
                (Some(Side::Right), Some(Side::Left)) => Some(((**b).clone(), (**a).clone())),
                _ => None,
            };
            if let Some((l, mut r)) = pair {
                r.remap(&|i| i - left_width);
                equi.push((l, r));
            }
        }
        rest.push(c.clone());
    }
    let on = and_all(rest);
    let lookup = match &right {
        Node::Scan {
            table,
            keys: None,
            limit: None,
            ..
        } if matches!(kind, JoinKind::Inner | JoinKind::Left) => lookup_keys(table, &equi),
        _ => None,
    };
    Ok(match (lookup, right) {
        (Some((index, keys)), Node::Scan { table, filter, .. }) => Node::LookupJoin {
            left: Box::new(left),
            table,
            index,
            keys,
            filter,
            kind,
            on,
            equi,
            left_width,
            right_width,
        },
        (_, right) => Node::Join {
            left: Box::new(left),
            right: Box::new(right),
            kind,
            on,
            equi,
            left_width,
            right_width,
        },
    })
}

/// For a lookup join into `table`: the index whose leading columns the join's equalities
/// give values for (the whole primary key first, else the secondary index with the most
/// leading columns given, else a primary key prefix), and the left expressions giving them.
fn lookup_keys(table: &TableDesc, equi: &[(Expr, Expr)]) -> Option<(u32, Vec<Expr>)> {
    let given = |col: usize| {
        equi.iter().find_map(|(l, r)| match r {
            Expr::Column(c) if *c == col => Some(l.clone()),
            _ => None,
        })
    };
    let leading = |idx: &crate::catalog::IndexDesc| -> Vec<Expr> {
        table
            .index_positions(idx)
            .into_iter()
            .map_while(given)
            .collect()
    };
    let pk = leading(&table.primary);
    if pk.len() == table.primary.columns.len() {
        return Some((table.primary.id, pk));
    }
    let (id, keys) = table
        .indexes
        .iter()
        .map(|idx| (idx.id, leading(idx)))
        .chain([(table.primary.id, pk)])
        .max_by_key(|(_, k)| k.len())?;
    (!keys.is_empty()).then_some((id, keys))
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
            match exact_cast(&v, ty) {
                Some(x) => typed.push(x),
                None => continue 'conjuncts,
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

/// How a predicate narrows a table's rows: the primary keys it pins, else spans of the index
/// (primary or secondary) whose leading columns it pins most with `=`/`IN`, the next column
/// bounded by `<`, `<=`, `>`, `>=` or BETWEEN if it is; on a tie the primary index, which
/// needs no second read. The predicate stays the scan's filter, so spans may hold more.
pub fn lookup(table: &TableDesc, pred: &Expr) -> Result<Option<Lookup>> {
    if let Some(keys) = point_keys(table, pred)? {
        return Ok(Some(Lookup::Primary(keys)));
    }
    let pinned = pinned_values(table, pred);
    let mut best: Option<(usize, &crate::catalog::IndexDesc, Vec<usize>, usize, Bounds)> = None;
    for idx in std::iter::once(&table.primary).chain(&table.indexes) {
        let cols = table.index_positions(idx);
        let n = cols.iter().take_while(|c| pinned.contains_key(c)).count();
        let bounds = match cols.get(n) {
            Some(&c) => bounds(table, pred, c),
            None => Bounds::default(),
        };
        let score = 2 * n + usize::from(!bounds.is_empty());
        if score > best.as_ref().map_or(0, |b| b.0) {
            best = Some((score, idx, cols, n, bounds));
        }
    }
    let Some((_, idx, cols, n, bounds)) = best else {
        return Ok(None);
    };
    let prefix = crate::encoding::index_prefix(table.id, idx.id);
    let Some(prefixes) = key_product(prefix, &cols[..n], &pinned)? else {
        return Ok(None);
    };
    let mut spans = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        let (start, end) = bounds.span(&p)?;
        if start < end {
            spans.push((start, end));
        }
    }
    Ok(Some(Lookup::Spans {
        index: idx.id,
        spans,
    }))
}

/// A bound on a column's values: the value and whether it is itself included.
type Bound = (Datum, bool);

/// Lower and upper bounds a predicate puts on one column.
#[derive(Default)]
struct Bounds {
    lower: Option<Bound>,
    upper: Option<Bound>,
}

impl Bounds {
    fn is_empty(&self) -> bool {
        self.lower.is_none() && self.upper.is_none()
    }

    /// The keys under `prefix` whose next column lies within the bounds.
    fn span(&self, prefix: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let key = |v: &Datum| -> Result<Vec<u8>> {
            let mut k = prefix.to_vec();
            encode_key_datum(v, &mut k)?;
            Ok(k)
        };
        let start = match &self.lower {
            None => prefix.to_vec(),
            Some((v, true)) => key(v)?,
            Some((v, false)) => crate::encoding::prefix_end(&key(v)?),
        };
        let end = match &self.upper {
            None => crate::encoding::prefix_end(prefix),
            Some((v, true)) => crate::encoding::prefix_end(&key(v)?),
            Some((v, false)) => key(v)?,
        };
        Ok((start, end))
    }
}

/// The tightest bounds the conjuncts `col < c`, `col <= c`, `col > c`, `col >= c` (either
/// way round, BETWEEN included) put on column `col`; a constant that a cast to the column's
/// type would change, or NULL, is not used.
fn bounds(table: &TableDesc, pred: &Expr, col: usize) -> Bounds {
    use std::cmp::Ordering;
    let mut b = Bounds::default();
    let Some(ty) = table.columns.get(col).map(|c| &c.ty) else {
        return b;
    };
    for c in conjuncts(pred) {
        let Expr::Binary(op, x, y) = c else { continue };
        // Normalized to `col op v`.
        let (op, v) = match (&**x, &**y) {
            (Expr::Column(i), v) if *i == col => (*op, v),
            (v, Expr::Column(i)) if *i == col => match op {
                BinOp::Lt => (BinOp::Gt, v),
                BinOp::LtEq => (BinOp::GtEq, v),
                BinOp::Gt => (BinOp::Lt, v),
                BinOp::GtEq => (BinOp::LtEq, v),
                _ => continue,
            },
            _ => continue,
        };
        let Some(v) = v.constant() else { continue };
        if v.is_null() {
            continue;
        }
        let Some(v) = exact_cast(v, ty) else { continue };
        // Keep the tighter of two bounds (the later one when they cannot be compared).
        let tighter = |old: &Option<Bound>, new: Bound, want: Ordering| match old {
            Some((o, inc)) => match new.0.compare(o) {
                Some(ord) if ord == want => new,
                Some(Ordering::Equal) => (new.0, new.1 && *inc),
                Some(_) => (o.clone(), *inc),
                None => new,
            },
            None => new,
        };
        match op {
            BinOp::Gt => b.lower = Some(tighter(&b.lower, (v, false), Ordering::Greater)),
            BinOp::GtEq => b.lower = Some(tighter(&b.lower, (v, true), Ordering::Greater)),
            BinOp::Lt => b.upper = Some(tighter(&b.upper, (v, false), Ordering::Less)),
            BinOp::LtEq => b.upper = Some(tighter(&b.upper, (v, true), Ordering::Less)),
            _ => {}
        }
    }
    b
}
