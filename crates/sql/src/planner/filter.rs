//! Where a filter goes: into the scan below it, as its predicate and, when the predicate pins
//! key columns to constants, as point lookups of primary keys or spans of a secondary index.

use super::*;

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
pub(super) fn push_filter(node: Node, pred: Expr) -> Result<Node> {
    if pred.has_subquery() {
        // Correlated subqueries run in a Filter node, row by row; the rest can go lower.
        let (with, without): (Vec<&Expr>, Vec<&Expr>) =
            conjuncts(&pred).into_iter().partition(|c| c.has_subquery());
        let and = |parts: Vec<&Expr>| {
            parts
                .into_iter()
                .cloned()
                .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
        };
        let input = match and(without) {
            Some(p) => push_filter(node, p)?,
            None => node,
        };
        return Ok(Node::Filter {
            input: Box::new(input),
            predicate: and(with).unwrap_or(pred),
        });
    }
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
