//! One conformance suite, run against every `Engine` implementation.

use bini_storage::{Cf, Engine, MemEngine, Reader, RocksEngine, RocksOptions, WriteBatch};

/// Runs `case` against a fresh instance of every engine.
fn for_each_engine(case: impl Fn(&dyn Engine)) {
    case(&MemEngine::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let rocks = RocksEngine::open(dir.path(), &RocksOptions::default()).expect("open rocks");
    case(&rocks);
}

fn put(engine: &dyn Engine, cf: Cf, pairs: &[(&str, &str)]) {
    let mut b = WriteBatch::new();
    for (k, v) in pairs {
        b.put(cf, k.as_bytes(), v.as_bytes());
    }
    engine.write(&b, false).expect("write");
}

fn keys(engine: &dyn Reader, cf: Cf, lower: &str, upper: &str) -> Vec<String> {
    engine
        .scan(cf, lower.as_bytes(), upper.as_bytes(), usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).expect("utf8"))
        .collect()
}

#[test]
fn get_put_delete() {
    for_each_engine(|e| {
        assert_eq!(e.get(Cf::Data, b"a").expect("get"), None);
        put(e, Cf::Data, &[("a", "1")]);
        assert_eq!(e.get(Cf::Data, b"a").expect("get"), Some(b"1".to_vec()));
        let mut b = WriteBatch::new();
        b.delete(Cf::Data, b"a".to_vec());
        e.write(&b, true).expect("write");
        assert_eq!(e.get(Cf::Data, b"a").expect("get"), None);
    });
}

#[test]
fn column_families_are_separate() {
    for_each_engine(|e| {
        put(e, Cf::Data, &[("k", "data")]);
        put(e, Cf::Raft, &[("k", "raft")]);
        assert_eq!(e.get(Cf::Data, b"k").expect("get"), Some(b"data".to_vec()));
        assert_eq!(e.get(Cf::Raft, b"k").expect("get"), Some(b"raft".to_vec()));
        assert_eq!(keys(e, Cf::Raft, "", ""), vec!["k"]);
    });
}

#[test]
fn iteration_respects_bounds_and_order() {
    for_each_engine(|e| {
        put(
            e,
            Cf::Data,
            &[("b", "2"), ("a", "1"), ("d", "4"), ("c", "3"), ("e", "5")],
        );
        assert_eq!(keys(e, Cf::Data, "b", "d"), vec!["b", "c"]);
        assert_eq!(keys(e, Cf::Data, "", ""), vec!["a", "b", "c", "d", "e"]);
        assert_eq!(keys(e, Cf::Data, "c", ""), vec!["c", "d", "e"]);
        assert!(keys(e, Cf::Data, "x", "z").is_empty());

        let mut it = e.iter(Cf::Data, b"b", b"e");
        it.seek(b"bb");
        assert!(it.valid().expect("valid"));
        assert_eq!(it.key(), b"c");
        it.next();
        assert_eq!(it.key(), b"d");
        it.next();
        assert!(!it.valid().expect("valid"), "upper bound is exclusive");
        it.seek(b"a");
        assert_eq!(it.key(), b"b", "seek below the lower bound lands on it");
        it.seek_for_prev(b"cz");
        assert_eq!(it.key(), b"c");
        it.prev();
        assert_eq!(it.key(), b"b");
        it.prev();
        assert!(!it.valid().expect("valid"), "lower bound is inclusive");
        it.seek_for_prev(b"zzz");
        assert_eq!(
            it.key(),
            b"d",
            "seek_for_prev past the upper bound lands below it"
        );
    });
}

#[test]
fn batch_is_atomic_and_ordered_across_families() {
    for_each_engine(|e| {
        let mut b = WriteBatch::new();
        b.put(Cf::Data, b"x".to_vec(), b"1".to_vec());
        b.put(Cf::Raft, b"log".to_vec(), b"entry".to_vec());
        b.put(Cf::Data, b"x".to_vec(), b"2".to_vec());
        e.write(&b, true).expect("write");
        assert_eq!(e.get(Cf::Data, b"x").expect("get"), Some(b"2".to_vec()));
        assert_eq!(
            e.get(Cf::Raft, b"log").expect("get"),
            Some(b"entry".to_vec())
        );
    });
}

#[test]
fn delete_range_removes_half_open_span() {
    for_each_engine(|e| {
        put(e, Cf::Raft, &[("1", ""), ("2", ""), ("3", ""), ("4", "")]);
        let mut b = WriteBatch::new();
        b.delete_range(Cf::Raft, b"2".to_vec(), b"4".to_vec());
        e.write(&b, false).expect("write");
        assert_eq!(keys(e, Cf::Raft, "", ""), vec!["1", "4"]);
    });
}

#[test]
fn snapshot_is_isolated_from_later_writes() {
    for_each_engine(|e| {
        put(e, Cf::Data, &[("a", "old")]);
        let snap = e.snapshot();
        put(e, Cf::Data, &[("a", "new"), ("b", "new")]);
        assert_eq!(
            snap.get(Cf::Data, b"a").expect("get"),
            Some(b"old".to_vec())
        );
        assert_eq!(keys(snap.as_ref(), Cf::Data, "", ""), vec!["a"]);
        assert_eq!(e.get(Cf::Data, b"a").expect("get"), Some(b"new".to_vec()));
    });
}

#[test]
fn synced_writes_are_counted() {
    for_each_engine(|e| {
        let before = e.sync_count();
        put(e, Cf::Data, &[("a", "1")]);
        let mut b = WriteBatch::new();
        b.put(Cf::Data, b"b".to_vec(), b"2".to_vec());
        e.write(&b, true).expect("write");
        e.sync().expect("sync");
        assert_eq!(e.sync_count() - before, 2);
    });
}

#[test]
fn rocks_data_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = RocksEngine::open(dir.path(), &RocksOptions::default()).expect("open");
        let mut b = WriteBatch::new();
        b.put(Cf::Data, b"durable".to_vec(), b"yes".to_vec());
        b.put(Cf::Raft, b"log".to_vec(), b"1".to_vec());
        e.write(&b, true).expect("write");
    }
    let e = RocksEngine::open(dir.path(), &RocksOptions::default()).expect("reopen");
    assert_eq!(
        e.get(Cf::Data, b"durable").expect("get"),
        Some(b"yes".to_vec())
    );
    assert_eq!(e.get(Cf::Raft, b"log").expect("get"), Some(b"1".to_vec()));
}
