//! EXPLAIN: a plan as indented lines, one per node, with the spans each scan reads.

/// Appends `node`'s line, indented by `depth`, then its inputs' lines.
pub(super) fn explain(node: &crate::plan::Node, depth: usize, out: &mut Vec<String>) {
    use crate::plan::Node as N;
    let pad = "  ".repeat(depth);
    let line = match node {
        N::Scan {
            table,
            keys,
            filter,
            limit,
        } => {
            use crate::internal::{pretty_index_key, pretty_key, pretty_primary_key};
            let spans = match keys {
                Some(crate::plan::Lookup::Spans { index, spans }) => {
                    let idx = table.index_by_id(*index);
                    let pretty = |k: &[u8]| match idx {
                        Some(idx) => {
                            pretty_index_key(table, idx.id, &table.index_positions(idx), k)
                        }
                        None => pretty_key(k),
                    };
                    format!(
                        "{} span(s) of index {} {}{}",
                        spans.len(),
                        idx.map(|i| i.name.as_str()).unwrap_or("?"),
                        spans
                            .iter()
                            .take(5)
                            .map(|(start, end)| {
                                if *end == crate::encoding::prefix_end(start) {
                                    pretty(start)
                                } else {
                                    format!("{} - {}", pretty(start), pretty(end))
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                        if spans.len() > 5 { ", …" } else { "" }
                    )
                }
                Some(crate::plan::Lookup::Primary(k)) => format!(
                    "{} point lookup(s) {}{}",
                    k.len(),
                    k.iter()
                        .take(5)
                        .map(|k| pretty_primary_key(table, k))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if k.len() > 5 { ", …" } else { "" }
                ),
                None => {
                    let (start, end) = table.primary_span();
                    format!(
                        "full scan of {}@{} {} - {}",
                        table.name,
                        table.primary.name,
                        pretty_key(&start),
                        pretty_key(&end)
                    )
                }
            };
            format!(
                "scan {}: {spans}{}{}",
                table.name,
                if filter.is_some() { ", filtered" } else { "" },
                limit.map(|l| format!(", limit {l}")).unwrap_or_default()
            )
        }
        N::Values { rows } => format!("values ({} rows)", rows.len()),
        N::Rows { rows } => format!("rows ({} rows)", rows.len()),
        N::Series { .. } => "generate_series".to_string(),
        N::Filter { .. } => "filter".into(),
        N::Project { .. } => "render".into(),
        N::Aggregate { group_by, .. } => format!("group ({} keys)", group_by.len()),
        N::Sort { .. } => "sort".into(),
        N::Limit { limit, offset, .. } => format!("limit {limit:?} offset {offset}"),
        N::Distinct { .. } => "distinct".into(),
        N::Join { kind, equi, .. } => format!(
            "{} {kind:?} join",
            if equi.is_empty() {
                "nested loop"
            } else {
                "hash"
            }
        ),
        N::LookupJoin {
            kind,
            table,
            index,
            keys,
            ..
        } => format!(
            "lookup {kind:?} join: {} key column(s) of {}@{} per left row (a full scan past {} left rows)",
            keys.len(),
            table.name,
            table.index_by_id(*index)
                .map(|i| i.name.as_str())
                .unwrap_or("?"),
            crate::plan::LOOKUP_JOIN_MAX_ROWS
        ),
        N::SetOp { op, all, .. } => format!("{op:?}{}", if *all { " all" } else { "" }),
    };
    out.push(format!("{pad}{line}"));
    match node {
        N::Filter { input, .. }
        | N::Project { input, .. }
        | N::Aggregate { input, .. }
        | N::Sort { input, .. }
        | N::Limit { input, .. }
        | N::Distinct { input }
        | N::LookupJoin { left: input, .. } => explain(input, depth + 1, out),
        N::Join { left, right, .. } | N::SetOp { left, right, .. } => {
            explain(left, depth + 1, out);
            explain(right, depth + 1, out);
        }
        _ => {}
    }
}
