//! The executor: a pipeline of iterators over rows, one per stage.
//!
//! Streaming stages (`where`, `extend`, `select`, `limit`) hold one row at a
//! time. The others hold what they must: `sort` every row (or, followed by
//! `limit N`, the best N in a bounded heap), `latest` one row per group,
//! `stats` one accumulator per group, and `window` every row of its input:
//! a frame may reach rows after the current one (`rows -1 .. 2`) and each
//! row's output keeps the input order, so the stage buffers its input and
//! computes every frame within its group (ordered by `produced_at`, `id`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use serde_json::Value as Json;

use super::ast::{Label, Segment};
use super::plan::{
    Access, AggFn, BoundMatcher, CAgg, CExpr, CStage, Field, Func, Pattern, Physical, RowOrder,
};
use super::source::RecordSource;
use super::value::{arith, compare, float, negate, total_cmp, Key, Value};
use crate::model::{StoredRecord, Timestamp};

/// A row in flight: a record with computed slots, or a row of columns.
#[derive(Clone, Debug)]
pub(crate) struct XRow {
    pub(crate) record: Option<StoredRecord>,
    pub(crate) slots: Vec<Value>,
    /// Where a row of columns stands (unused for records).
    key: ColumnKey,
}

/// Where a row of columns stands in (`produced_at`, `id`) order: see
/// [`ordered_by_columns`]. Rows hold it and views borrow it, which keeps
/// [`RowRef`] (copied at each level of an expression's evaluation) small.
#[derive(Clone, Copy, Debug)]
struct ColumnKey {
    /// The `produced_at` column, in µs (`i64::MIN` without one, or when it
    /// is not an instant).
    ts: i64,
    /// The `id` column (0 without one, or when it is not a non-negative
    /// integer).
    id: u64,
    /// The row's place in arrival order.
    seq: u64,
}

impl ColumnKey {
    /// No columns to order by.
    const NONE: ColumnKey = ColumnKey::arrival(0);

    /// The key of the `seq`-th row to arrive, before any column orders it.
    const fn arrival(seq: u64) -> Self {
        ColumnKey {
            ts: i64::MIN,
            id: 0,
            seq,
        }
    }

    fn order(&self) -> RowKey {
        (self.ts, self.id, self.seq)
    }
}

/// Where a row stands in (`produced_at`, `id`) order: for records their
/// fields; for rows of columns their columns of those names where they
/// have them, then their arrival.
type RowKey = (i64, u64, u64);

impl XRow {
    fn from_record(record: StoredRecord) -> Self {
        XRow {
            record: Some(record),
            slots: Vec::new(),
            key: ColumnKey::NONE,
        }
    }

    /// Records order by (`produced_at`, `id`); rows of columns by their
    /// columns of those names where they have them, then by arrival (see
    /// [`ordered_by_columns`]).
    fn order(&self) -> RowKey {
        match &self.record {
            Some(r) => (r.record.produced_at.as_micros(), r.id, 0),
            None => self.key.order(),
        }
    }

    fn set_slot(&mut self, slot: usize, value: Value) {
        if slot >= self.slots.len() {
            self.slots.resize(slot + 1, Value::Null);
        }
        self.slots[slot] = value;
    }
}

/// A borrowed view of a row: what expressions read. The stats of a scan
/// evaluate on the source's record in place (see [`stats_over_scan`]).
#[derive(Clone, Copy)]
pub(crate) struct RowRef<'r> {
    record: Option<&'r StoredRecord>,
    slots: &'r [Value],
    key: &'r ColumnKey,
}

impl RowRef<'_> {
    /// As [`XRow::order`].
    fn order(&self) -> RowKey {
        match self.record {
            Some(r) => (r.record.produced_at.as_micros(), r.id, 0),
            None => self.key.order(),
        }
    }
}

impl<'r> From<&'r XRow> for RowRef<'r> {
    fn from(row: &'r XRow) -> Self {
        RowRef {
            record: row.record.as_ref(),
            slots: &row.slots,
            key: &row.key,
        }
    }
}

/// A stream of rows in flight.
pub(crate) type RowIter<'a> = Box<dyn Iterator<Item = crate::Result<XRow>> + 'a>;

/// Runs a physical plan against a source.
pub(crate) fn execute<'a>(
    mut physical: Physical,
    source: &'a dyn RecordSource,
) -> crate::Result<RowIter<'a>> {
    if let Some(rows) = stats_over_scan(&mut physical, source) {
        let mut rows = rows;
        for stage in physical.stages {
            rows = apply(stage.stage, stage.order, rows);
        }
        return Ok(rows);
    }
    let mut rows: RowIter<'a> = match &physical.access {
        Access::Scan(request) => Box::new(source.scan(request)?.map(|r| r.map(XRow::from_record))),
        Access::Latest { kinds, targets } => {
            let mut records = source.latest_records(kinds.as_deref(), targets.as_deref())?;
            records.sort_by_key(|r| (r.record.produced_at, r.id));
            // The table has an entry per target; `latest` groups by the
            // `target` field, the canonical name, which two targets can
            // share (`pg:sales.eu.orders`): the newest of them stays.
            let mut seen = std::collections::HashSet::new();
            let mut newest: Vec<StoredRecord> = records
                .into_iter()
                .rev()
                .filter(|r| seen.insert((r.record.kind.clone(), r.record.target.canonical_name())))
                .collect();
            newest.reverse();
            Box::new(newest.into_iter().map(|r| Ok(XRow::from_record(r))))
        }
    };
    if !physical.label_filters.is_empty() {
        let filters = physical.label_filters;
        rows = Box::new(rows.filter(move |row| match row {
            Ok(row) => filters.iter().all(|m| label_matches(m, row.into())),
            Err(_) => true,
        }));
    }
    for stage in physical.stages {
        rows = apply(stage.stage, stage.order, rows);
    }
    Ok(rows)
}

/// When a scan's records go through `where`/`extend` stages into `stats`
/// (no record reaches the output), runs them all over
/// [`RecordSource::scan_each`]: each record is looked at in the source's
/// own place (decoded over the previous one) instead of being built and
/// moved through the pipeline. Removes the stages it runs from `physical`
/// and returns the stats rows (computed on the first pull); `None` leaves
/// `physical` as it was.
fn stats_over_scan<'a>(
    physical: &mut Physical,
    source: &'a dyn RecordSource,
) -> Option<RowIter<'a>> {
    let Access::Scan(request) = &physical.access else {
        return None;
    };
    let n_streaming = physical
        .stages
        .iter()
        .take_while(|s| matches!(s.stage, CStage::Filter(_) | CStage::Extend(_)))
        .count();
    if !matches!(
        physical.stages.get(n_streaming).map(|s| &s.stage),
        Some(CStage::Stats { .. })
    ) {
        return None;
    }
    let request = request.clone();
    let label_filters = std::mem::take(&mut physical.label_filters);
    let mut taken = physical.stages.drain(..=n_streaming).map(|s| s.stage);
    let streaming: Vec<CStage> = taken.by_ref().take(n_streaming).collect();
    let Some(CStage::Stats { aggregates, by }) = taken.next() else {
        return None;
    };
    drop(taken);
    let run = move || -> crate::Result<Box<dyn Iterator<Item = XRow>>> {
        let mut grouping = Grouping::new(&aggregates, &by);
        // The slots `extend` sets on the current record.
        let mut slots: Vec<Value> = Vec::new();
        source.scan_each(&request, &mut |record| {
            slots.clear();
            let bare = RowRef {
                record: Some(record),
                slots: &[],
                key: &ColumnKey::NONE,
            };
            if label_filters.iter().all(|m| label_matches(m, bare))
                && run_streaming(&streaming, record, &mut slots)
            {
                grouping.add(RowRef {
                    record: Some(record),
                    slots: &slots,
                    key: &ColumnKey::NONE,
                });
            }
        })?;
        Ok(grouping.finish())
    };
    Some(blocking(Box::new(std::iter::empty()), move |_| run()))
}

/// Runs `where` and `extend` stages on one record and the slots `extend`
/// sets; false when a `where` drops it.
fn run_streaming(stages: &[CStage], record: &StoredRecord, slots: &mut Vec<Value>) -> bool {
    for stage in stages {
        match stage {
            CStage::Filter(e) => {
                let row = RowRef {
                    record: Some(record),
                    slots,
                    key: &ColumnKey::NONE,
                };
                if !eval(e, row).is_true() {
                    return false;
                }
            }
            CStage::Extend(assignments) => {
                for (slot, e) in assignments {
                    let row = RowRef {
                        record: Some(record),
                        slots,
                        key: &ColumnKey::NONE,
                    };
                    let value = eval(e, row);
                    if *slot >= slots.len() {
                        slots.resize(slot + 1, Value::Null);
                    }
                    slots[*slot] = value;
                }
            }
            _ => return false,
        }
    }
    true
}

fn label_matches(m: &BoundMatcher, row: RowRef<'_>) -> bool {
    let Some(stored) = row.record else {
        return false;
    };
    let r = &stored.record;
    let value: String = match m.label {
        Label::Source => r.target.source_id.clone(),
        Label::Schema => r.target.schema.clone(),
        Label::Table => r.target.table.clone(),
        Label::Target => r.target.canonical_name(),
        Label::Producer => r.producer_id.clone(),
        Label::RunId => r.context.run_id.clone().unwrap_or_default(),
        Label::JobId => r.context.job_id.clone().unwrap_or_default(),
        Label::Namespace => r.context.namespace.clone().unwrap_or_default(),
        Label::Tenant => r.context.tenant().unwrap_or_default().to_owned(),
    };
    m.test.matches(&value)
}

/// Rows of columns ordered as records are, by their `produced_at` and
/// `id` columns (spec: `latest`, `first`/`last` and `window` order by
/// (`produced_at`, `id`)): a `produced_at` that is not an instant, or an
/// `id` that is not a non-negative integer, orders first; rows equal in
/// both keep their arrival order (see [`XRow::order`]).
fn ordered_by_columns(rows: RowIter<'_>, order: RowOrder) -> RowIter<'_> {
    Box::new(rows.map(move |row| {
        let mut row = row?;
        if row.record.is_none() {
            if let Some(slot) = order.produced_at {
                row.key.ts = match row.slots.get(slot) {
                    Some(Value::Instant(ts)) => ts.as_micros(),
                    _ => i64::MIN,
                };
            }
            if let Some(slot) = order.id {
                row.key.id = match row.slots.get(slot) {
                    Some(Value::Int(id)) => u64::try_from(*id).unwrap_or(0),
                    _ => 0,
                };
            }
        }
        Ok(row)
    }))
}

fn apply<'a>(stage: CStage, order: Option<RowOrder>, rows: RowIter<'a>) -> RowIter<'a> {
    let rows = match (&stage, order) {
        (CStage::Latest(_) | CStage::Stats { .. } | CStage::Window { .. }, Some(order)) => {
            ordered_by_columns(rows, order)
        }
        _ => rows,
    };
    match stage {
        CStage::Filter(e) => Box::new(rows.filter(move |row| match row {
            Ok(row) => eval(&e, row).is_true(),
            Err(_) => true,
        })),
        CStage::Extend(assignments) => Box::new(rows.map(move |row| {
            let mut row = row?;
            for (slot, e) in &assignments {
                let value = eval(e, &row);
                row.set_slot(*slot, value);
            }
            Ok(row)
        })),
        CStage::Select(exprs) => {
            let mut seq = 0;
            Box::new(rows.map(move |row| {
                let row = row?;
                seq += 1;
                Ok(XRow {
                    record: None,
                    slots: exprs.iter().map(|e| eval(e, &row)).collect(),
                    key: ColumnKey::arrival(seq),
                })
            }))
        }
        CStage::Limit(n) => Box::new(rows.take(limit_of(&n))),
        CStage::Sort { keys, limit } => {
            let limit = limit.as_ref().map(limit_of);
            blocking(rows, move |rows| sort(rows, &keys, limit))
        }
        CStage::Latest(by) => blocking(rows, move |rows| latest(rows, &by)),
        CStage::Stats { aggregates, by } => {
            blocking(rows, move |rows| stats(rows, &aggregates, &by))
        }
        CStage::Window {
            aggregates,
            slots,
            by,
            start,
            end,
            ..
        } => {
            let (start, end) = (offset_of(&start), offset_of(&end));
            blocking(rows, move |rows| {
                window(rows, &aggregates, &slots, &by, start, end)
            })
        }
    }
}

/// A window frame offset. Binding (`plan::bind`) turns every offset into
/// an integer constant and refuses anything else, so nothing else reaches
/// execution.
fn offset_of(n: &CExpr) -> i64 {
    debug_assert!(
        matches!(n, CExpr::Const(Value::Int(_))),
        "unbound frame offset {n:?}"
    );
    match n {
        CExpr::Const(Value::Int(i)) => *i,
        _ => 0,
    }
}

/// A `limit` count; as for [`offset_of`], binding leaves only integers.
fn limit_of(n: &CExpr) -> usize {
    debug_assert!(
        matches!(n, CExpr::Const(Value::Int(_))),
        "unbound limit {n:?}"
    );
    match n {
        CExpr::Const(Value::Int(i)) => usize::try_from(*i).unwrap_or(usize::MAX),
        _ => 0,
    }
}

/// A stage that needs all of its input before it yields: runs lazily, on
/// the first pull, then yields its output without copying it.
fn blocking<'a, I>(
    rows: RowIter<'a>,
    run: impl FnOnce(RowIter<'a>) -> crate::Result<I> + 'a,
) -> RowIter<'a>
where
    I: IntoIterator<Item = XRow> + 'a,
{
    Box::new(
        std::iter::once_with(move || run(rows)).flat_map(|result| -> RowIter<'a> {
            match result {
                Ok(rows) => Box::new(rows.into_iter().map(Ok)),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        }),
    )
}

/// Sort keys of one row, with their directions and arrival index (stability).
struct SortEntry {
    keys: Vec<(Key, bool)>,
    index: usize,
    row: XRow,
}

impl SortEntry {
    fn cmp_keys(&self, other: &SortEntry) -> Ordering {
        for ((a, descending), (b, _)) in self.keys.iter().zip(&other.keys) {
            let ord = a.cmp(b);
            let ord = if *descending { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        self.index.cmp(&other.index)
    }
}

impl PartialEq for SortEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_keys(other) == Ordering::Equal
    }
}
impl Eq for SortEntry {}
impl PartialOrd for SortEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SortEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_keys(other)
    }
}

/// `sort`: nulls first ascending (last descending), ties in arrival order;
/// with a limit, a heap of at most `limit` rows.
fn sort(
    rows: RowIter<'_>,
    keys: &[(CExpr, bool)],
    limit: Option<usize>,
) -> crate::Result<Vec<XRow>> {
    let entry = |index: usize, row: XRow| SortEntry {
        keys: keys.iter().map(|(e, d)| (Key(eval(e, &row)), *d)).collect(),
        index,
        row,
    };
    let mut entries: Vec<SortEntry> = match limit {
        Some(0) => return Ok(Vec::new()),
        Some(n) => {
            let mut heap = BinaryHeap::with_capacity(n.min(4096) + 1);
            for (index, row) in rows.enumerate() {
                heap.push(entry(index, row?));
                if heap.len() > n {
                    heap.pop();
                }
            }
            heap.into_vec()
        }
        None => rows
            .enumerate()
            .map(|(index, row)| row.map(|row| entry(index, row)))
            .collect::<crate::Result<_>>()?,
    };
    entries.sort();
    Ok(entries.into_iter().map(|e| e.row).collect())
}

fn group_key<'r>(by: &[CExpr], row: impl Into<RowRef<'r>>) -> Vec<Key> {
    let row = row.into();
    by.iter().map(|e| Key(eval(e, row))).collect()
}

/// `latest`: per group the row with the greatest (`produced_at`, `id`). It
/// keeps rows as `where` does: the rows kept come in the order they came in
/// (records by (`produced_at`, `id`), rows of columns by arrival, unless a
/// `sort` before it ordered them).
fn latest(rows: RowIter<'_>, by: &[CExpr]) -> crate::Result<Vec<XRow>> {
    // Per group: the best row so far and its position in the input.
    let mut groups: BTreeMap<Vec<Key>, (usize, XRow)> = BTreeMap::new();
    for (at, row) in rows.enumerate() {
        let row = row?;
        let key = group_key(by, &row);
        match groups.get_mut(&key) {
            Some((_, best)) if best.order() >= row.order() => {}
            Some(best) => *best = (at, row),
            None => {
                groups.insert(key, (at, row));
            }
        }
    }
    let mut out: Vec<(usize, XRow)> = groups.into_values().collect();
    out.sort_unstable_by_key(|(at, _)| *at);
    Ok(out.into_iter().map(|(_, row)| row).collect())
}

/// `stats`: one row per group, sorted by the group keys; one row in all
/// (even for no input) without `by`. Columns: the keys, then the aggregates.
///
/// Per group the state is compact and allocates nothing of its own: the
/// key's bytes (see [`write_group_key`]) in one arena of a [`GroupTable`],
/// and the accumulators in one flat `Vec` (group `g`'s are at
/// `g * n_aggs ..`). Key values are rebuilt from the bytes once, after the
/// input, to sort the groups and emit their rows; the bytes of a float
/// with an integer value (or of JSON) do not say what the row held, so
/// such groups keep their first row's key values aside.
fn stats(
    rows: RowIter<'_>,
    aggregates: &[CAgg],
    by: &[CExpr],
) -> crate::Result<Box<dyn Iterator<Item = XRow>>> {
    let mut grouping = Grouping::new(aggregates, by);
    for row in rows {
        grouping.add((&row?).into());
    }
    Ok(grouping.finish())
}

/// The state of a `stats` stage while rows arrive (see [`stats`]).
struct Grouping<'q> {
    aggregates: &'q [CAgg],
    by: &'q [CExpr],
    table: GroupTable,
    accs: Vec<Acc>,
    /// (group, its first row's key values) where the bytes lose them.
    kept_keys: Vec<(usize, Vec<Value>)>,
    buf: Vec<u8>,
}

impl<'q> Grouping<'q> {
    fn new(aggregates: &'q [CAgg], by: &'q [CExpr]) -> Self {
        let mut grouping = Grouping {
            aggregates,
            by,
            table: GroupTable::new(),
            accs: Vec::new(),
            kept_keys: Vec::new(),
            buf: Vec::with_capacity(64),
        };
        if by.is_empty() {
            grouping.table.find_or_insert(&[]);
            grouping.accs.extend(aggregates.iter().map(Acc::new));
        }
        grouping
    }

    fn add(&mut self, row: RowRef<'_>) {
        let (aggregates, by) = (self.aggregates, self.by);
        self.buf.clear();
        let mut exact = true;
        for e in by {
            exact &= write_group_key(e, row, &mut self.buf);
        }
        let (group, is_new) = self.table.find_or_insert(&self.buf);
        if is_new {
            self.accs.extend(aggregates.iter().map(Acc::new));
            if !exact {
                let values = group_key(by, row).into_iter().map(|k| k.0).collect();
                self.kept_keys.push((group, values));
            }
        }
        let start = group * aggregates.len();
        let accs = &mut self.accs[start..start + aggregates.len()];
        for (acc, agg) in accs.iter_mut().zip(aggregates) {
            let value = agg.arg.as_ref().map_or(Value::Null, |e| eval(e, row));
            acc.feed(value, row.order());
        }
    }

    /// The groups' rows, sorted by their keys, built as they are pulled.
    fn finish(self) -> Box<dyn Iterator<Item = XRow>> {
        let n_aggs = self.aggregates.len();
        let n_keys = self.by.len();
        let n_groups = self.table.len();
        let mut keys: Vec<Value> = Vec::with_capacity(n_groups * n_keys);
        // Where each key value's bytes end within its group's key.
        let mut ends: Vec<usize> = Vec::with_capacity(n_groups * n_keys);
        for group in 0..n_groups {
            let all = self.table.key(group);
            let mut bytes = all;
            for _ in 0..n_keys {
                keys.push(read_value_key(&mut bytes).unwrap_or(Value::Null));
                ends.push(all.len() - bytes.len());
            }
        }
        for (group, values) in self.kept_keys {
            for (slot, value) in keys[group * n_keys..].iter_mut().zip(values) {
                *slot = value;
            }
        }
        // The groups sort by ranks rather than values: per key column, the
        // distinct values (equal exactly when their bytes are) are sorted
        // once and numbered, so the sort of the groups compares integers.
        let mut ranks: Vec<usize> = vec![0; n_groups * n_keys];
        // Distinct values per key column.
        let mut distinct: Vec<usize> = Vec::with_capacity(n_keys);
        for column in 0..n_keys {
            // Distinct values by their bytes, numbered in order of appearance.
            let mut ids = GroupTable::new();
            // A group holding each distinct value, by id.
            let mut holders: Vec<usize> = Vec::new();
            for group in 0..n_groups {
                let at = group * n_keys + column;
                let start = if column == 0 { 0 } else { ends[at - 1] };
                let part = self.table.key(group).get(start..ends[at]).unwrap_or(&[]);
                let (id, is_new) = ids.find_or_insert(part);
                if is_new {
                    holders.push(group);
                }
                ranks[at] = id;
            }
            let value = |id: usize| &keys[holders[id] * n_keys + column];
            let mut by_value: Vec<usize> = (0..holders.len()).collect();
            by_value.sort_unstable_by(|&a, &b| total_cmp(value(a), value(b)));
            distinct.push(holders.len());
            let mut rank_of = vec![0; holders.len()];
            for (rank, id) in by_value.into_iter().enumerate() {
                rank_of[id] = rank;
            }
            for group in 0..n_groups {
                let at = group * n_keys + column;
                ranks[at] = rank_of[ranks[at]];
            }
        }
        let order =
            packed_order(&ranks, n_keys, &distinct).unwrap_or_else(|| slice_order(&ranks, n_keys));
        // An `XRow` is large (it can hold a record): a `Vec` of one per
        // group is not needed.
        let mut accs = self.accs;
        Box::new(order.into_iter().enumerate().map(move |(i, group)| {
            let key = keys[group * n_keys..][..n_keys]
                .iter_mut()
                .map(|k| std::mem::replace(k, Value::Null));
            let done = accs[group * n_aggs..][..n_aggs].iter_mut().map(|acc| {
                let func = acc.func;
                std::mem::replace(
                    acc,
                    Acc {
                        func,
                        state: State::Rows(0),
                    },
                )
                .finish()
            });
            XRow {
                record: None,
                slots: key.chain(done).collect(),
                key: ColumnKey::arrival(i as u64),
            }
        }))
    }
}

/// The groups (rows of `n_keys` ranks each in `ranks`) in ascending order
/// of their ranks, column by column. Group keys are distinct, so an
/// unstable sort gives the one order.
fn slice_order(ranks: &[usize], n_keys: usize) -> Vec<usize> {
    let n_groups = ranks.len().checked_div(n_keys).unwrap_or(1);
    let mut order: Vec<usize> = (0..n_groups).collect();
    order.sort_unstable_by(|&a, &b| {
        ranks[a * n_keys..][..n_keys].cmp(&ranks[b * n_keys..][..n_keys])
    });
    order
}

/// [`slice_order`] sorting one integer per group: its ranks side by side,
/// each column as wide as its number of distinct values (`distinct`)
/// needs. `None` when they do not fit in 128 bits.
fn packed_order(ranks: &[usize], n_keys: usize, distinct: &[usize]) -> Option<Vec<usize>> {
    let widths: Vec<u32> = distinct
        .iter()
        .map(|&n| usize::BITS - n.saturating_sub(1).leading_zeros())
        .collect();
    if widths.iter().sum::<u32>() > 128 {
        return None;
    }
    let n_groups = ranks.len().checked_div(n_keys).unwrap_or(1);
    let mut packed: Vec<(u128, usize)> = (0..n_groups)
        .map(|group| {
            let key = ranks[group * n_keys..][..n_keys]
                .iter()
                .zip(&widths)
                .fold(0u128, |acc, (&rank, &width)| {
                    acc.checked_shl(width).unwrap_or(0) | rank as u128
                });
            (key, group)
        })
        .collect();
    packed.sort_unstable();
    Some(packed.into_iter().map(|(_, group)| group).collect())
}

/// Groups by key bytes: an open-addressing hash table (linear probing) of
/// group indexes over one arena of keys, so a new group costs no allocation
/// of its own. Keys are hashed with one-shot xxh3 (already a dependency,
/// for content hashes), with a random seed per query, so stored values
/// cannot be chosen to collide.
struct GroupTable {
    seed: u64,
    /// Group index + 1; 0 is an empty slot. The length is a power of two.
    slots: Vec<usize>,
    /// Per group: the key's hash and where its bytes end in `arena` (they
    /// start where the previous group's end).
    hashes: Vec<u64>,
    ends: Vec<usize>,
    arena: Vec<u8>,
}

impl GroupTable {
    fn new() -> Self {
        use std::hash::BuildHasher;
        GroupTable {
            seed: std::hash::RandomState::new().hash_one(0u64),
            slots: vec![0; 64],
            hashes: Vec::new(),
            ends: Vec::new(),
            arena: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn key(&self, group: usize) -> &[u8] {
        let start = group.checked_sub(1).map_or(0, |g| self.ends[g]);
        &self.arena[start..self.ends[group]]
    }

    /// The group of `key`, and whether it was just created.
    fn find_or_insert(&mut self, key: &[u8]) -> (usize, bool) {
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed);
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            match self.slots[at] {
                0 => break,
                slot => {
                    let group = slot - 1;
                    if self.hashes[group] == hash && self.key(group) == key {
                        return (group, false);
                    }
                }
            }
            at = (at + 1) & mask;
        }
        let group = self.len();
        self.slots[at] = group + 1;
        self.hashes.push(hash);
        self.arena.extend_from_slice(key);
        self.ends.push(self.arena.len());
        // At most half full, so probes stay short and a slot is always free.
        if self.len() * 2 > self.slots.len() {
            self.grow();
        }
        (group, true)
    }

    fn grow(&mut self) {
        let mut slots = vec![0; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for (group, &hash) in self.hashes.iter().enumerate() {
            let mut at = hash as usize & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = group + 1;
        }
        self.slots = slots;
    }
}

/// Appends the group key bytes of `e` on `row`: equal bytes exactly when
/// the values are equal [`Key`]s, so a hash table can find groups. A
/// record's canonical target name is written from its parts, without
/// building it. Returns whether [`read_value_key`] gives back the value
/// itself (see [`write_value_key`]).
fn write_group_key(e: &CExpr, row: RowRef<'_>, out: &mut Vec<u8>) -> bool {
    if let (CExpr::Rec(Field::Target, rest), Some(stored)) = (e, row.record) {
        if rest.is_empty() {
            let t = &stored.record.target;
            let len = t.source_id.len()
                + usize::from(!t.source_id.is_empty())
                + t.schema.len()
                + 1
                + t.table.len();
            out.push(KEY_STR);
            out.extend_from_slice(&(len as u64).to_le_bytes());
            if !t.source_id.is_empty() {
                out.extend_from_slice(t.source_id.as_bytes());
                out.push(b':');
            }
            out.extend_from_slice(t.schema.as_bytes());
            out.push(b'.');
            out.extend_from_slice(t.table.as_bytes());
            return true;
        }
    }
    if let Some(value) = bin_of_produced_at(e, row) {
        return write_value_key(&value, out);
    }
    write_value_key(&eval(e, row), out)
}

/// `bin(produced_at, D)` with a constant duration (the usual time key of
/// `stats`), computed straight from the record: what [`eval`] gives for
/// it, without walking the expression. `None` for any other expression.
fn bin_of_produced_at(e: &CExpr, row: RowRef<'_>) -> Option<Value> {
    let (CExpr::Func(Func::Bin, args), Some(stored)) = (e, row.record) else {
        return None;
    };
    let [CExpr::Rec(Field::ProducedAt, rest), CExpr::Const(Value::Duration(d))] = args.as_slice()
    else {
        return None;
    };
    if !rest.is_empty() || *d <= 0 {
        return None;
    }
    let micros = stored.record.produced_at.as_micros();
    Some(
        micros
            .checked_sub(micros.rem_euclid(*d))
            .map_or(Value::Null, |m| Value::Instant(Timestamp::from_micros(m))),
    )
}

const KEY_NULL: u8 = 0;
const KEY_BOOL: u8 = 1;
const KEY_INT: u8 = 2;
const KEY_FLOAT: u8 = 3;
const KEY_INSTANT: u8 = 4;
const KEY_DURATION: u8 = 5;
const KEY_STR: u8 = 6;
const KEY_JSON: u8 = 7;

/// The group key bytes of a value (see [`write_group_key`]). Numbers that
/// compare equal share bytes: a float with an integer value in i64's range
/// is written as that integer (so `1` and `1.0`, `0` and `-0.0` are one
/// group); other floats by their bits (finite, so `total_cmp` equality is
/// bit equality). Variable-length values carry their length. Returns false
/// when [`read_value_key`] would not give back `v` itself: for such floats
/// (it gives the integer) and for JSON (kept as text).
fn write_value_key(v: &Value, out: &mut Vec<u8>) -> bool {
    let mut tagged = |tag: u8, word: u64| {
        out.push(tag);
        out.extend_from_slice(&word.to_le_bytes());
    };
    match v {
        Value::Null => out.push(KEY_NULL),
        Value::Bool(b) => {
            out.push(KEY_BOOL);
            out.push(u8::from(*b));
        }
        Value::Int(i) => tagged(KEY_INT, *i as u64),
        Value::Float(x) => {
            const TWO_63: f64 = 9_223_372_036_854_775_808.0;
            if x.fract() == 0.0 && *x >= -TWO_63 && *x < TWO_63 {
                tagged(KEY_INT, *x as i64 as u64);
                return false;
            }
            tagged(KEY_FLOAT, x.to_bits());
        }
        Value::Instant(ts) => tagged(KEY_INSTANT, ts.as_micros() as u64),
        Value::Duration(d) => tagged(KEY_DURATION, *d as u64),
        Value::Str(s) => {
            tagged(KEY_STR, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Json(j) => {
            // `total_cmp` compares arrays and objects by their JSON text.
            let text = j.to_string();
            tagged(KEY_JSON, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
            return false;
        }
    }
    true
}

/// Reads back one value written by [`write_value_key`] and advances
/// `bytes` past it; `None` on bytes it did not write. JSON comes back as
/// a string of its text (callers keep JSON keys aside).
fn read_value_key(bytes: &mut &[u8]) -> Option<Value> {
    let (&tag, rest) = bytes.split_first()?;
    *bytes = rest;
    let mut word = || -> Option<u64> {
        let (w, rest) = bytes.split_first_chunk::<8>()?;
        *bytes = rest;
        Some(u64::from_le_bytes(*w))
    };
    Some(match tag {
        KEY_NULL => Value::Null,
        KEY_BOOL => {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            Value::Bool(b != 0)
        }
        KEY_INT => Value::Int(word()? as i64),
        KEY_FLOAT => Value::Float(f64::from_bits(word()?)),
        KEY_INSTANT => Value::Instant(Timestamp::from_micros(word()? as i64)),
        KEY_DURATION => Value::Duration(word()? as i64),
        KEY_STR | KEY_JSON => {
            let len = usize::try_from(word()?).ok()?;
            if len > bytes.len() {
                return None;
            }
            let (text, rest) = bytes.split_at(len);
            *bytes = rest;
            // Written from a `str`; lossy only for bytes it did not write.
            Value::Str(
                String::from_utf8(text.to_vec())
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            )
        }
        _ => return None,
    })
}

/// `window`: for each row, aggregates over the rows at offsets `start..=end`
/// from it within its group, ordered by (`produced_at`, `id`).
fn window(
    rows: RowIter<'_>,
    aggregates: &[CAgg],
    slots: &[usize],
    by: &[CExpr],
    start: i64,
    end: i64,
) -> crate::Result<Vec<XRow>> {
    let mut rows: Vec<XRow> = rows.collect::<crate::Result<_>>()?;
    let mut groups: BTreeMap<Vec<Key>, Vec<usize>> = BTreeMap::new();
    for (index, row) in rows.iter().enumerate() {
        groups.entry(group_key(by, row)).or_default().push(index);
    }
    // Per row and aggregate: the argument's value.
    let args: Vec<Vec<Value>> = rows
        .iter()
        .map(|row| {
            aggregates
                .iter()
                .map(|a| a.arg.as_ref().map_or(Value::Null, |e| eval(e, row)))
                .collect()
        })
        .collect();
    let mut results: Vec<Vec<Value>> = vec![Vec::with_capacity(aggregates.len()); rows.len()];
    for members in groups.values_mut() {
        members.sort_by_key(|&i| rows[i].order());
        let n = members.len() as i64;
        for (k, agg) in aggregates.iter().enumerate() {
            // The state, the first row it holds and the last one fed.
            let mut held: Option<(Acc, i64, i64)> = None;
            for (pos, &row_index) in members.iter().enumerate() {
                let pos = pos as i64;
                let first = pos.saturating_add(start).max(0);
                let last = pos.saturating_add(end).min(n - 1);
                // Frames only move forward. A frame that starts where the
                // previous one did continues its state, fed the new rows in
                // the order a fresh state would be (floats summed in the same
                // order); one that starts later first takes out the rows it
                // left, where the aggregate can do so exactly (`remove`).
                // Either way every value is the same, bit for bit, as
                // feeding the frame from scratch.
                let carried = held.take().filter(|_| reuse_frames()).and_then(
                    |(mut acc, held_first, fed)| {
                        for at in held_first..first.min(fed + 1) {
                            if !acc.remove(&args[members[at as usize]][k]) {
                                return None;
                            }
                        }
                        Some((acc, first, fed.max(first - 1)))
                    },
                );
                let (acc, _, fed) = held.insert(carried.unwrap_or_else(|| {
                    let mut acc = Acc::new(agg);
                    if reuse_frames() {
                        acc.for_window();
                    }
                    (acc, first, first - 1)
                }));
                while *fed < last {
                    *fed += 1;
                    let member = members[*fed as usize];
                    acc.feed(args[member][k].clone(), rows[member].order());
                }
                results[row_index].push(acc.value());
            }
        }
    }
    for (row, values) in rows.iter_mut().zip(results) {
        for (slot, value) in slots.iter().zip(values) {
            row.set_slot(*slot, value);
        }
    }
    Ok(rows)
}

/// Whether `window` may carry one frame's state into the next (always,
/// except in the test that compares it with recomputing every frame).
#[cfg(not(test))]
fn reuse_frames() -> bool {
    true
}

#[cfg(test)]
thread_local! {
    static REUSE_FRAMES: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

#[cfg(test)]
fn reuse_frames() -> bool {
    REUSE_FRAMES.with(|r| r.get())
}

/// Welford's state (count, mean, sum of squared deviations from the
/// mean) of `n` integers whose sum and sum of squares are given. The sum of
/// squared deviations is `squares - sum^2 / n`; with `sum = q * n + r`
/// (`0 <= r < n`) that is `squares - q * (sum + r) - r^2 / n`, whose first
/// part is exact in `i128` (it lies between 0 and `squares`), so only the
/// small `r^2 / n` and the final conversion round. Subtracting the two
/// large terms in `f64` instead leaves rounding noise: two values near
/// 6.8e18 one apart gave a deviation of 1.4e11.
fn welford_from_sums(n: u64, sum: i128, squares: i128) -> (u64, f64, f64) {
    if n == 0 {
        return (0, 0.0, 0.0);
    }
    let count = i128::from(n);
    let (q, r) = (sum.div_euclid(count), sum.rem_euclid(count));
    let exact = sum
        .checked_add(r)
        .and_then(|s| q.checked_mul(s))
        .and_then(|qs| squares.checked_sub(qs));
    let m2 = match exact {
        Some(d) => (d as f64 - (r as f64) * (r as f64) / n as f64).max(0.0),
        // Not reached (`q * (sum + r)` is at most `squares`); kept finite.
        None => {
            let mean = sum as f64 / n as f64;
            (squares as f64 - mean * sum as f64).max(0.0)
        }
    };
    (n, sum as f64 / n as f64, m2)
}

/// An aggregate's running state.
struct Acc {
    func: AggFn,
    state: State,
}

enum State {
    /// `count()`
    Rows(u64),
    /// `count(X)`
    NonNull(u64),
    /// `countif(E)`
    True(u64),
    /// Each distinct value and how many rows hold it (a sliding window
    /// takes rows out again).
    Distinct(BTreeMap<Key, u64>),
    Sum {
        ints: i128,
        floats: f64,
        any_float: bool,
        n: u64,
    },
    /// As `Sum`: integers summed exactly (so a sliding frame can take
    /// them out again), floats in the order fed.
    Avg {
        ints: i128,
        floats: f64,
        any_float: bool,
        n: u64,
    },
    Extreme(Extremes),
    /// `stddev` while every value fed is an integer: exact sums of the
    /// values and of their squares (a sliding frame takes values out
    /// again). The first float, or a sum that would overflow, turns it
    /// into `StddevFloat`, from these sums.
    Stddev {
        n: u64,
        sum: i128,
        squares: i128,
    },
    /// `stddev` by Welford's running mean and sum of squared deviations.
    StddevFloat {
        n: u64,
        mean: f64,
        m2: f64,
    },
    Percentile {
        values: Vec<f64>,
        p: f64,
        /// `values` are kept in order as they come (a running window
        /// asks for the value after every row), else sorted at the end.
        sorted: bool,
    },
    Pick(Option<(RowKey, Value)>),
    /// `min`/`max` in a sliding window frame (see [`Acc::for_window`]):
    /// per kind of value, the rows that can still be the extreme once
    /// older rows leave, each with its place in the feeding order, best
    /// first (among equals, the first fed, as `Extreme` keeps).
    SlidingExtreme(Box<SlidingExtremes>),
    /// `first`/`last` in a sliding window frame: the frame's rows, in the
    /// order fed (which is row order).
    SlidingPick(VecDeque<(RowKey, Value)>),
}

/// The smallest (or largest) number, instant and string fed, the first
/// fed among equals; the answer is the number, else the instant, else the
/// string.
#[derive(Default)]
struct Extremes {
    number: Option<Value>,
    instant: Option<Timestamp>,
    string: Option<String>,
}

/// Whether a value that compares `ord` to another is the better extreme:
/// greater for `max`, smaller for `min`.
fn beats(ord: Ordering, is_max: bool) -> bool {
    ord == if is_max {
        Ordering::Greater
    } else {
        Ordering::Less
    }
}

impl Extremes {
    fn feed(&mut self, value: Value, is_max: bool) {
        let better = |ord: Ordering| beats(ord, is_max);
        match value {
            v @ (Value::Int(_) | Value::Float(_))
                if self
                    .number
                    .as_ref()
                    .is_none_or(|best| better(total_cmp(&v, best))) =>
            {
                self.number = Some(v);
            }
            Value::Instant(ts) if self.instant.is_none_or(|best| better(ts.cmp(&best))) => {
                self.instant = Some(ts);
            }
            Value::Str(s)
                if self
                    .string
                    .as_ref()
                    .is_none_or(|best| better(s.as_bytes().cmp(best.as_bytes()))) =>
            {
                self.string = Some(s);
            }
            _ => {}
        }
    }

    fn value(&self) -> Value {
        self.number
            .clone()
            .or(self.instant.map(Value::Instant))
            .or(self.string.clone().map(Value::Str))
            .unwrap_or(Value::Null)
    }

    fn finish(self) -> Value {
        self.number
            .or(self.instant.map(Value::Instant))
            .or(self.string.map(Value::Str))
            .unwrap_or(Value::Null)
    }
}

/// `min`/`max` in a sliding window frame (see [`Acc::for_window`]): per
/// kind of value, the rows that can still be the extreme once older rows
/// leave, each with its place in the feeding order, best first (among
/// equals, the first fed, as [`Extremes`] keeps). Boxed in [`State`], so
/// that every other accumulator (a `stats` group holds one per aggregate)
/// stays small.
#[derive(Default)]
struct SlidingExtremes {
    /// What [`Extremes`] would hold: the answer until a row is removed.
    fold: Extremes,
    fed: u64,
    removed: u64,
    numbers: VecDeque<(u64, Value)>,
    instants: VecDeque<(u64, Timestamp)>,
    strings: VecDeque<(u64, String)>,
    /// Integers and floats were both fed: `total_cmp` is not transitive
    /// across them (0 equals both -0.0 and 0.0, which differ), so the
    /// lists could disagree with the fold and `remove` declines (the frame
    /// is fed afresh).
    saw_int: bool,
    saw_float: bool,
}

impl SlidingExtremes {
    fn feed(&mut self, value: Value, is_max: bool) {
        self.fold.feed(value.clone(), is_max);
        self.saw_int |= matches!(value, Value::Int(_));
        self.saw_float |= matches!(value, Value::Float(_));
        let seq = self.fed;
        self.fed += 1;
        // Beaten by the new value: never the extreme again while it is in
        // the frame (it leaves first).
        let beaten = |ord: Ordering| beats(ord, is_max);
        match value {
            v @ (Value::Int(_) | Value::Float(_)) => {
                while (self.numbers.back()).is_some_and(|(_, held)| beaten(total_cmp(&v, held))) {
                    self.numbers.pop_back();
                }
                self.numbers.push_back((seq, v));
            }
            Value::Instant(ts) => {
                while (self.instants.back()).is_some_and(|(_, held)| beaten(ts.cmp(held))) {
                    self.instants.pop_back();
                }
                self.instants.push_back((seq, ts));
            }
            Value::Str(text) => {
                while (self.strings.back())
                    .is_some_and(|(_, held)| beaten(text.as_bytes().cmp(held.as_bytes())))
                {
                    self.strings.pop_back();
                }
                self.strings.push_back((seq, text));
            }
            _ => {}
        }
    }

    /// Takes out the oldest row fed (frames only move forward): the front
    /// of whichever list holds it. False when the lists may be wrong.
    fn remove(&mut self) -> bool {
        if self.saw_int && self.saw_float {
            return false;
        }
        let seq = self.removed;
        self.removed += 1;
        if self.numbers.front().is_some_and(|(at, _)| *at == seq) {
            self.numbers.pop_front();
        } else if self.instants.front().is_some_and(|(at, _)| *at == seq) {
            self.instants.pop_front();
        } else if self.strings.front().is_some_and(|(at, _)| *at == seq) {
            self.strings.pop_front();
        }
        true
    }

    fn value(&self) -> Value {
        if self.removed == 0 {
            return self.fold.value();
        }
        (self.numbers.front().map(|(_, v)| v.clone()))
            .or(self.instants.front().map(|&(_, ts)| Value::Instant(ts)))
            .or(self.strings.front().map(|(_, s)| Value::Str(s.clone())))
            .unwrap_or(Value::Null)
    }
}

impl Acc {
    fn new(agg: &CAgg) -> Acc {
        let state = match agg.func {
            AggFn::Count if agg.arg.is_none() => State::Rows(0),
            AggFn::Count => State::NonNull(0),
            AggFn::CountIf => State::True(0),
            AggFn::CountDistinct => State::Distinct(BTreeMap::new()),
            AggFn::Sum => State::Sum {
                ints: 0,
                floats: 0.0,
                any_float: false,
                n: 0,
            },
            AggFn::Avg => State::Avg {
                ints: 0,
                floats: 0.0,
                any_float: false,
                n: 0,
            },
            AggFn::Min | AggFn::Max => State::Extreme(Extremes::default()),
            AggFn::Stddev => State::Stddev {
                n: 0,
                sum: 0,
                squares: 0,
            },
            AggFn::Percentile => State::Percentile {
                values: Vec::new(),
                p: match &agg.p {
                    Some(CExpr::Const(v)) => v.as_f64().unwrap_or(50.0),
                    _ => 50.0,
                },
                sorted: false,
            },
            AggFn::First | AggFn::Last => State::Pick(None),
        };
        Acc {
            func: agg.func,
            state,
        }
    }

    fn feed(&mut self, value: Value, order: RowKey) {
        let is_max = self.func == AggFn::Max;
        let is_last = self.func == AggFn::Last;
        match &mut self.state {
            State::Rows(n) => *n += 1,
            State::NonNull(n) => *n += u64::from(!value.is_null()),
            State::True(n) => *n += u64::from(value.is_true()),
            State::Distinct(set) => {
                if !value.is_null() {
                    *set.entry(Key(normalise_number(value))).or_insert(0) += 1;
                }
            }
            State::Sum {
                ints,
                floats,
                any_float,
                n,
            }
            | State::Avg {
                ints,
                floats,
                any_float,
                n,
            } => match value {
                Value::Int(i) => {
                    *ints += i128::from(i);
                    *n += 1;
                }
                Value::Float(x) => {
                    *floats += x;
                    *any_float = true;
                    *n += 1;
                }
                _ => {}
            },
            State::Extreme(extremes) => extremes.feed(value, is_max),
            State::Stddev { n, sum, squares } => {
                let exact = match value {
                    Value::Int(i) => {
                        let i = i128::from(i);
                        // |i| <= 2^63, so its square fits.
                        sum.checked_add(i).zip(squares.checked_add(i * i))
                    }
                    Value::Float(_) => None,
                    _ => return,
                };
                match exact {
                    Some((new_sum, new_squares)) => {
                        *sum = new_sum;
                        *squares = new_squares;
                        *n += 1;
                    }
                    None => {
                        let (n, mean, m2) = welford_from_sums(*n, *sum, *squares);
                        self.state = State::StddevFloat { n, mean, m2 };
                        self.feed(value, order);
                    }
                }
            }
            State::StddevFloat { n, mean, m2 } => {
                if let Some(x) = value.as_f64() {
                    *n += 1;
                    let delta = x - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (x - *mean);
                }
            }
            State::Percentile { values, sorted, .. } => {
                if let Some(x) = value.as_f64() {
                    if *sorted {
                        // After its equals: the order `sort_by(total_cmp)` gives.
                        let at = values.partition_point(|v| v.total_cmp(&x) != Ordering::Greater);
                        values.insert(at, x);
                    } else {
                        values.push(x);
                    }
                }
            }
            State::SlidingExtreme(sliding) => sliding.feed(value, is_max),
            State::SlidingPick(rows) => rows.push_back((order, value)),
            State::Pick(best) => {
                let replace = match best {
                    None => true,
                    Some((at, _)) => {
                        if is_last {
                            order > *at
                        } else {
                            order < *at
                        }
                    }
                };
                if replace {
                    *best = Some((order, value));
                }
            }
        }
    }

    /// Takes out the oldest value fed (the row leaving a sliding window's
    /// frame), leaving exactly the state feeding the other values would
    /// have made; false where that cannot be done exactly (a float leaving
    /// a sum or an average, any value leaving a deviation once it holds a
    /// float; extremes over both integers and floats,
    /// whose order is not transitive), and then the state is spoilt: the
    /// caller starts afresh. `min`, `max`, `first` and `last` take rows out
    /// only in the states [`Acc::for_window`] gives them.
    fn remove(&mut self, value: &Value) -> bool {
        match &mut self.state {
            State::Rows(n) => *n -= 1,
            State::NonNull(n) => *n -= u64::from(!value.is_null()),
            State::True(n) => *n -= u64::from(value.is_true()),
            State::Distinct(set) => {
                if !value.is_null() {
                    let key = Key(normalise_number(value.clone()));
                    match set.get_mut(&key) {
                        Some(1) => {
                            set.remove(&key);
                        }
                        Some(n) => *n -= 1,
                        None => return false,
                    }
                }
            }
            // Integers leave the exact sum; the floats' sum cannot give one
            // back exactly, and stays as a fresh state would have summed
            // the floats still in the frame (all of them: none left).
            State::Sum { ints, n, .. } | State::Avg { ints, n, .. } => match value {
                Value::Int(i) => {
                    *ints -= i128::from(*i);
                    *n -= 1;
                }
                Value::Float(_) => return false,
                _ => {}
            },
            State::Stddev { n, sum, squares } => match value {
                Value::Int(i) => {
                    let i = i128::from(*i);
                    *sum -= i;
                    *squares -= i * i;
                    *n -= 1;
                }
                // Not in an exact state's frame: it would have turned it
                // into `StddevFloat`.
                Value::Float(_) => return false,
                _ => {}
            },
            State::Percentile {
                values,
                sorted: true,
                ..
            } => {
                if let Some(x) = value.as_f64() {
                    // Equal under `total_cmp` means the same bits.
                    match values.binary_search_by(|v| v.total_cmp(&x)) {
                        Ok(at) => {
                            values.remove(at);
                        }
                        Err(_) => return false,
                    }
                }
            }
            State::SlidingExtreme(sliding) => return sliding.remove(),
            State::SlidingPick(rows) => {
                rows.pop_front();
            }
            _ => return false,
        }
        true
    }

    /// Readies a fresh state for a window frame that slides: percentiles
    /// keep their values sorted (a running frame asks for one after every
    /// row), and `min`, `max`, `first` and `last` keep what lets `remove`
    /// take the oldest row out exactly.
    fn for_window(&mut self) {
        match &mut self.state {
            State::Percentile { values, sorted, .. } => {
                values.sort_by(f64::total_cmp);
                *sorted = true;
            }
            State::Extreme(_) => {
                self.state = State::SlidingExtreme(Box::default());
            }
            State::Pick(None) => self.state = State::SlidingPick(VecDeque::new()),
            _ => {}
        }
    }

    /// The aggregate's value so far; feeding may go on.
    fn value(&self) -> Value {
        match &self.state {
            State::Rows(n) | State::NonNull(n) | State::True(n) => {
                i64::try_from(*n).map_or(Value::Null, Value::Int)
            }
            State::Distinct(set) => i64::try_from(set.len()).map_or(Value::Null, Value::Int),
            State::Sum {
                ints,
                floats,
                any_float,
                n,
            } => {
                if *n == 0 {
                    Value::Null
                } else if *any_float {
                    float(*ints as f64 + floats)
                } else {
                    i64::try_from(*ints).map_or(Value::Null, Value::Int)
                }
            }
            // `floats` is 0.0 without floats, and `x + 0.0` is `x`.
            State::Avg {
                ints, floats, n, ..
            } => {
                if *n == 0 {
                    Value::Null
                } else {
                    float((*ints as f64 + floats) / *n as f64)
                }
            }
            State::Extreme(extremes) => extremes.value(),
            State::Stddev { n, sum, squares } => {
                if *n < 2 {
                    Value::Null
                } else {
                    let (_, _, m2) = welford_from_sums(*n, *sum, *squares);
                    float((m2 / (*n - 1) as f64).sqrt())
                }
            }
            State::StddevFloat { n, m2, .. } => {
                if *n < 2 {
                    Value::Null
                } else {
                    float((m2 / (*n - 1) as f64).sqrt())
                }
            }
            State::Percentile {
                values,
                p,
                sorted: true,
            } => percentile(values, *p),
            State::Percentile { values, p, .. } => {
                let mut values = values.clone();
                values.sort_by(f64::total_cmp);
                percentile(&values, *p)
            }
            State::Pick(best) => best.as_ref().map_or(Value::Null, |(_, v)| v.clone()),
            State::SlidingExtreme(sliding) => sliding.value(),
            State::SlidingPick(rows) => {
                let row = if self.func == AggFn::Last {
                    rows.back()
                } else {
                    rows.front()
                };
                row.map_or(Value::Null, |(_, v)| v.clone())
            }
        }
    }

    /// The final value: [`Acc::value`], moving what it would copy.
    fn finish(self) -> Value {
        match self.state {
            State::Percentile {
                mut values,
                p,
                sorted: false,
            } => {
                values.sort_by(f64::total_cmp);
                percentile(&values, p)
            }
            State::Extreme(extremes) => extremes.finish(),
            State::Pick(best) => best.map_or(Value::Null, |(_, v)| v),
            _ => self.value(),
        }
    }
}

/// The `p`th percentile of sorted values, interpolated between the closest
/// ranks; null when there are none.
fn percentile(sorted: &[f64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (Some(a), Some(b)) = (sorted.get(lo), sorted.get(hi)) else {
        return Value::Null;
    };
    float(a + (b - a) * (rank - lo as f64))
}

/// `1` and `1.0` are one distinct value.
fn normalise_number(v: Value) -> Value {
    match v {
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e18 => Value::Int(x as i64),
        other => other,
    }
}

// ------------------------------------------------------------------ expressions

/// Evaluates an expression on a row (parameters and `now` are bound).
pub(crate) fn eval<'r>(e: &CExpr, row: impl Into<RowRef<'r>>) -> Value {
    eval_ref(e, row.into())
}

fn eval_ref(e: &CExpr, row: RowRef<'_>) -> Value {
    match e {
        CExpr::Const(v) => v.clone(),
        CExpr::Param { .. } | CExpr::Now(_) | CExpr::Time(..) => Value::Null,
        CExpr::Rec(..) | CExpr::Slot(..) => lookup(e, row).unwrap_or(Value::Null),
        CExpr::Exists(path) => Value::Bool(lookup(path, row).is_some()),
        CExpr::Neg(x) => negate(&eval(x, row)),
        CExpr::Not(x) => Value::Bool(!eval(x, row).is_true()),
        CExpr::And(a, b) => Value::Bool(eval(a, row).is_true() && eval(b, row).is_true()),
        CExpr::Or(a, b) => Value::Bool(eval(a, row).is_true() || eval(b, row).is_true()),
        CExpr::IsNull(x, negated) => Value::Bool(eval(x, row).is_null() != *negated),
        CExpr::Cmp(op, a, b) => Value::Bool(compare_op(*op, &eval(a, row), &eval(b, row))),
        CExpr::Arith(first, rest) => rest.iter().fold(eval(first, row), |acc, (op, x)| {
            arith(*op, &acc, &eval(x, row))
        }),
        CExpr::Regex {
            expr,
            pattern,
            negated,
        } => {
            let Pattern::Compiled(re) = pattern else {
                return Value::Bool(false);
            };
            let text = match eval(expr, row) {
                Value::Str(s) => s,
                Value::Instant(ts) => match ts.to_rfc3339_checked() {
                    Some(text) => text,
                    None => return Value::Bool(false),
                },
                _ => return Value::Bool(false),
            };
            Value::Bool(re.is_match(&text) != *negated)
        }
        CExpr::In(x, list) => {
            // A `null` written in the list became an `IsNull` test when the
            // query was bound; what is left compares as `=` does.
            let value = eval(x, row);
            Value::Bool(
                list.iter()
                    .any(|c| compare_op(super::ast::BinOp::Eq, &value, &eval(c, row))),
            )
        }
        CExpr::Func(f, args) => call(*f, args, row),
        CExpr::Deep(super::plan::Deep(x)) => super::plan::Deep::with_room(|| eval(x, row)),
    }
}

fn compare_op(op: super::ast::BinOp, a: &Value, b: &Value) -> bool {
    use super::ast::BinOp;
    if let (Value::Json(x), Value::Json(y)) = (a, b) {
        return match op {
            BinOp::Eq => x == y,
            BinOp::Ne => x != y,
            _ => false,
        };
    }
    let Some(ord) = compare(a, b) else {
        return false;
    };
    match op {
        BinOp::Eq => ord == Ordering::Equal,
        BinOp::Ne => ord != Ordering::Equal,
        BinOp::Lt => ord == Ordering::Less,
        BinOp::Le => ord != Ordering::Greater,
        BinOp::Gt => ord == Ordering::Greater,
        BinOp::Ge => ord != Ordering::Less,
        _ => false,
    }
}

fn call(f: Func, args: &[CExpr], row: RowRef<'_>) -> Value {
    let arg = |i: usize| args.get(i).map_or(Value::Null, |e| eval(e, row));
    match f {
        Func::Len => match arg(0) {
            Value::Str(s) => Value::Int(s.chars().count() as i64),
            Value::Json(Json::Array(a)) => Value::Int(a.len() as i64),
            _ => Value::Null,
        },
        Func::Lower => match arg(0) {
            Value::Str(s) => Value::Str(s.to_lowercase()),
            _ => Value::Null,
        },
        Func::Upper => match arg(0) {
            Value::Str(s) => Value::Str(s.to_uppercase()),
            _ => Value::Null,
        },
        Func::Abs => match arg(0) {
            Value::Int(i) => i.checked_abs().map_or(Value::Null, Value::Int),
            Value::Float(x) => Value::Float(x.abs()),
            _ => Value::Null,
        },
        Func::Coalesce => args
            .iter()
            .map(|e| eval(e, row))
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
        Func::Timestamp => arg(0).to_instant().map_or(Value::Null, Value::Instant),
        Func::Bin => match (arg(0).to_instant(), arg(1)) {
            (Some(ts), Value::Duration(d)) if d > 0 => {
                let micros = ts.as_micros();
                micros
                    .checked_sub(micros.rem_euclid(d))
                    .map_or(Value::Null, |m| Value::Instant(Timestamp::from_micros(m)))
            }
            _ => Value::Null,
        },
    }
}

/// The value at a path, or `None` when the row does not have it.
fn lookup(e: &CExpr, row: RowRef<'_>) -> Option<Value> {
    match e {
        CExpr::Slot(slot, rest) => {
            let value = row.slots.get(*slot)?;
            if rest.is_empty() {
                return Some(value.clone());
            }
            match value {
                Value::Json(json) => navigate(json, rest).map(Value::from_json),
                _ => None,
            }
        }
        CExpr::Rec(field, rest) => record_value(row.record?, *field, rest),
        _ => Some(eval(e, row)),
    }
}

fn navigate<'j>(mut json: &'j Json, path: &[Segment]) -> Option<&'j Json> {
    for segment in path {
        json = match (segment, json) {
            (Segment::Field(name), Json::Object(map)) => map.get(name)?,
            (Segment::Index(i), Json::Array(items)) => items.get(usize::try_from(*i).ok()?)?,
            _ => return None,
        };
    }
    Some(json)
}

fn navigate_object(map: &crate::model::JsonObject, path: &[Segment]) -> Option<Value> {
    match path.split_first() {
        None => Some(Value::Json(Json::Object(map.clone()))),
        Some((Segment::Field(name), rest)) => navigate(map.get(name)?, rest).map(Value::from_json),
        Some((Segment::Index(_), _)) => None,
    }
}

fn string_leaf(value: &str, rest: &[Segment]) -> Option<Value> {
    rest.is_empty().then(|| Value::Str(value.to_owned()))
}

fn record_value(stored: &StoredRecord, field: Field, rest: &[Segment]) -> Option<Value> {
    let r = &stored.record;
    let first = match rest.first() {
        Some(Segment::Field(name)) => Some(name.as_str()),
        _ => None,
    };
    let after_first = rest.get(1..).unwrap_or(&[]);
    match field {
        Field::Id => rest
            .is_empty()
            .then(|| i64::try_from(stored.id).map_or(Value::Float(stored.id as f64), Value::Int)),
        Field::Kind => string_leaf(&r.kind, rest),
        Field::ProducerId => string_leaf(&r.producer_id, rest),
        Field::ProducedAt => rest.is_empty().then_some(Value::Instant(r.produced_at)),
        Field::Version => {
            if !rest.is_empty() {
                return None;
            }
            r.version
                .map(|v| i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
        }
        Field::Quality => navigate(r.quality.as_ref()?, rest).map(Value::from_json),
        Field::Payload => navigate_object(&r.payload, rest),
        Field::Extras => navigate_object(&r.extras, rest),
        Field::Target => match first {
            None if rest.is_empty() => Some(Value::Str(r.target.canonical_name())),
            Some("source_id") => string_leaf(&r.target.source_id, after_first),
            Some("schema") => string_leaf(&r.target.schema, after_first),
            Some("table") => string_leaf(&r.target.table, after_first),
            Some("extras") => navigate_object(&r.target.extras, after_first),
            _ => None,
        },
        Field::Context => {
            let c = &r.context;
            let optional =
                |v: &Option<String>| v.as_deref().and_then(|s| string_leaf(s, after_first));
            match first {
                None if rest.is_empty() => Some(Value::Json(context_json(stored))),
                Some("job_id") => optional(&c.job_id),
                Some("run_id") => optional(&c.run_id),
                Some("namespace") => optional(&c.namespace),
                Some("extras") => navigate_object(&c.extras, after_first),
                _ => None,
            }
        }
    }
}

fn context_json(stored: &StoredRecord) -> Json {
    match stored.to_json_value() {
        Json::Object(mut map) => map.remove("context").unwrap_or(Json::Null),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{MetadataRecord, StoredRecord, Timestamp};
    use crate::query::{prepare, ExecOptions, MemorySource, Params};

    fn record(id: u64, line: &str) -> StoredRecord {
        StoredRecord {
            id,
            record: MetadataRecord::from_json_str(line).expect("valid record"),
        }
    }

    fn source() -> MemorySource {
        let r = |id, kind: &str, table: &str, at: &str, payload: &str| {
            record(
                id,
                &format!(
                    r#"{{"kind":"{kind}","target":{{"schema":"s","table":"{table}"}},"payload":{payload},"produced_at":"{at}","producer_id":"p","context":{{"run_id":"run-{id}"}}}}"#
                ),
            )
        };
        MemorySource::new(vec![
            r(
                1,
                "vol",
                "a",
                "2024-01-01T00:00:00Z",
                r#"{"rows":10,"outcome":"fail"}"#,
            ),
            r(2, "vol", "b", "2024-01-01T12:00:00Z", r#"{"rows":20.5}"#),
            r(
                3,
                "vol",
                "a",
                "2024-01-02T00:00:00Z",
                r#"{"rows":30,"outcome":"pass"}"#,
            ),
            r(
                4,
                "chk",
                "a",
                "2024-01-02T00:00:00Z",
                r#"{"outcome":"timeout"}"#,
            ),
            r(5, "vol", "a", "2024-01-03T00:00:00Z", r#"{"rows":null}"#),
        ])
    }

    /// Runs `query` and compares each row's JSON, compacted, keeping only
    /// the keys in `keys` for record rows (all keys for others).
    #[test]
    fn packed_group_order_is_the_slice_order() {
        use super::{packed_order, slice_order};
        // Distinct rank rows (as group keys are) of 1 to 4 columns with few
        // or many distinct values, shuffled by a fixed LCG.
        let mut seed: u64 = 42;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize % n
        };
        for distinct in [
            vec![1],
            vec![7],
            vec![300, 2],
            vec![5, 1, 9],
            vec![2, 3, 4, 1000],
        ] {
            let n_keys = distinct.len();
            let mut rows: Vec<Vec<usize>> = (0..500)
                .map(|_| distinct.iter().map(|&n| next(n)).collect())
                .collect();
            rows.sort();
            rows.dedup();
            for i in (1..rows.len()).rev() {
                rows.swap(i, next(i + 1));
            }
            let ranks: Vec<usize> = rows.concat();
            let packed = packed_order(&ranks, n_keys, &distinct).expect("fits");
            assert_eq!(packed, slice_order(&ranks, n_keys), "{distinct:?}");
        }
        // No key columns: the one group.
        assert_eq!(packed_order(&[], 0, &[]), Some(vec![0]));
        assert_eq!(slice_order(&[], 0), vec![0]);
        // Too wide to pack.
        assert_eq!(packed_order(&[0, 0, 0], 3, &[usize::MAX; 3]), None);
    }

    #[test]
    fn bin_of_produced_at_is_what_eval_gives() {
        use super::{bin_of_produced_at, eval, RowRef};
        use crate::query::plan::{CExpr, Field, Func};
        use crate::query::value::Value;
        let bin = |d: Value| {
            CExpr::Func(
                Func::Bin,
                vec![CExpr::Rec(Field::ProducedAt, vec![]), CExpr::Const(d)],
            )
        };
        for at in [
            "2024-01-01T00:00:00Z",
            "2024-05-31T23:59:59.999999Z",
            "1969-12-31T23:59:59.5Z",
            "1900-02-28T01:02:03Z",
        ] {
            let stored = record(
                1,
                &format!(
                    r#"{{"kind":"k","target":{{"table":"t"}},"payload":{{}},"produced_at":"{at}","producer_id":"p"}}"#
                ),
            );
            let row = RowRef {
                record: Some(&stored),
                slots: &[],
                key: &super::ColumnKey::NONE,
            };
            for micros in [
                1,
                1_000_000,
                3_600_000_000,
                86_400_000_000,
                7 * 86_400_000_000,
            ] {
                let e = bin(Value::Duration(micros));
                assert_eq!(
                    bin_of_produced_at(&e, row),
                    Some(eval(&e, row)),
                    "{at} {micros}"
                );
            }
            // Other forms are left to `eval`.
            for d in [Value::Duration(0), Value::Duration(-5), Value::Int(60)] {
                assert_eq!(bin_of_produced_at(&bin(d), row), None);
            }
        }
    }

    fn check(query: &str, expected: &[&str]) {
        let prepared = prepare(query).unwrap_or_else(|e| panic!("{}", e.render(query)));
        let source = source();
        let options = ExecOptions {
            now: Timestamp::parse_rfc3339("2024-01-04T00:00:00Z").unwrap(),
            use_indexes: true,
        };
        let output = prepared
            .run(&source, &Params::new(), &options)
            .expect("runs");
        let rows: Vec<String> = output
            .rows
            .iter()
            .map(|row| match row {
                crate::query::Row::Record { record, computed } => {
                    let mut text = format!("#{}", record.id);
                    for (name, value) in computed {
                        text.push_str(&format!(" {name}={value}"));
                    }
                    text
                }
                other => other.json_text(&output.columns),
            })
            .collect();
        assert_eq!(rows, expected, "{query}");
    }

    #[test]
    fn filters_and_time() {
        check("* | where payload.rows > 15", &["#2", "#3"]);
        check("vol | since 2d", &["#3", "#5"]);
        check("* | between 2024-01-01T12:00:00Z .. 2024-01-02", &["#2"]);
        check("* | where payload.rows = null", &["#4", "#5"]);
        check("* | where not payload.rows > 15", &["#1", "#4", "#5"]);
        check(
            "*{table=~\"a\"} | where payload.outcome in (\"fail\", \"timeout\")",
            &["#1", "#4"],
        );
        check("*{run_id=\"run-3\"}", &["#3"]);
        check(
            "*{run_id!=\"run-3\", producer=\"p\"} | limit 2",
            &["#1", "#2"],
        );
    }

    #[test]
    fn latest_sort_limit() {
        check("* | latest", &["#2", "#4", "#5"]);
        check("* | latest by target", &["#2", "#5"]);
        check("vol | sort payload.rows desc | limit 2", &["#3", "#2"]);
        check("vol | sort payload.rows", &["#5", "#1", "#2", "#3"]);
    }

    #[test]
    fn stats_and_window() {
        check(
            "vol | stats count(), sum(payload.rows) as s, avg(payload.rows) as a by target",
            &[
                r#"{"target":"s.a","count()":3,"s":40,"a":20.0}"#,
                r#"{"target":"s.b","count()":1,"s":20.5,"a":20.5}"#,
            ],
        );
        check(
            "nothing | stats count() as n, max(payload.rows) as m",
            &[r#"{"n":0,"m":null}"#],
        );
        check(
            "vol | stats count() as n by bin(produced_at, 1d) as day",
            &[
                r#"{"day":"2024-01-01T00:00:00Z","n":2}"#,
                r#"{"day":"2024-01-02T00:00:00Z","n":1}"#,
                r#"{"day":"2024-01-03T00:00:00Z","n":1}"#,
            ],
        );
        // Keys that group bytes do not give back (floats with integer
        // values, JSON) come out as the group's first row had them.
        check(
            "vol | stats count() as n by payload.rows / 2 as h",
            &[
                r#"{"h":null,"n":1}"#,
                r#"{"h":5.0,"n":1}"#,
                r#"{"h":10.25,"n":1}"#,
                r#"{"h":15.0,"n":1}"#,
            ],
        );
        check(
            "* | stats count() as n by payload, kind",
            // Objects order by their JSON text, keys sorted (as a store
            // holds them).
            &[
                r#"{"payload":{"outcome":"fail","rows":10},"kind":"vol","n":1}"#,
                r#"{"payload":{"outcome":"pass","rows":30},"kind":"vol","n":1}"#,
                r#"{"payload":{"outcome":"timeout"},"kind":"chk","n":1}"#,
                r#"{"payload":{"rows":20.5},"kind":"vol","n":1}"#,
                r#"{"payload":{"rows":null},"kind":"vol","n":1}"#,
            ],
        );
        check(
            "vol | window sum(payload.rows) as s by target rows -1 .. 0",
            &["#1 s=10", "#2 s=20.5", "#3 s=40", "#5 s=30"],
        );
        check(
            "vol | extend r = payload.rows * 2 | select r, target",
            &[
                r#"{"r":20,"target":"s.a"}"#,
                r#"{"r":41.0,"target":"s.b"}"#,
                r#"{"r":60,"target":"s.a"}"#,
                r#"{"r":null,"target":"s.a"}"#,
            ],
        );
    }

    #[test]
    fn group_key_bytes_are_equal_exactly_for_equal_keys() {
        use super::{write_value_key, Key, Value};
        let values = [
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(0),
            Value::Int(1),
            Value::Int(-1),
            Value::Int(i64::MAX),
            Value::Float(0.0),
            Value::Float(1.0),
            Value::Float(1.5),
            Value::Float(-1.0),
            Value::Float(9.3e18),
            Value::Float(-9_223_372_036_854_775_808.0),
            Value::Int(i64::MIN),
            Value::Str("1".into()),
            Value::Str("a".into()),
            Value::Str("ab".into()),
            Value::Instant(Timestamp::from_micros(1)),
            Value::Duration(1),
            Value::Json(serde_json::json!([1, 2])),
            Value::Json(serde_json::json!({"a": 1})),
        ];
        let bytes = |v: &Value| {
            let mut out = Vec::new();
            write_value_key(v, &mut out);
            out
        };
        for a in &values {
            for b in &values {
                assert_eq!(
                    Key(a.clone()) == Key(b.clone()),
                    bytes(a) == bytes(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
        // Reading the bytes back gives the value, but for what the writer
        // says it loses.
        for v in &values {
            let mut out = Vec::new();
            let exact = write_value_key(v, &mut out);
            let mut rest = out.as_slice();
            let back = super::read_value_key(&mut rest).expect("reads back");
            assert!(rest.is_empty(), "{v:?}");
            assert_eq!(exact, &back == v, "{v:?} read back as {back:?}");
            if !matches!(v, Value::Json(_)) {
                assert_eq!(Key(back), Key(v.clone()), "{v:?}");
            }
        }
        // -0.0 is 0, as for `=` and count_distinct (the BTreeMap this
        // replaced put -0.0 and 0.0 in one group or two depending on order).
        assert_eq!(bytes(&Value::Float(-0.0)), bytes(&Value::Int(0)));
    }

    /// Every `stats` group holds one accumulator per aggregate: a state
    /// twice as large slowed `stats` over many groups by ~15%
    /// once (`3f1af23`). Larger variants go behind a `Box`.
    #[test]
    fn an_aggregate_state_stays_small() {
        assert!(std::mem::size_of::<super::State>() <= 80);
    }

    /// A runner of queries over the records given as JSON (ids 1, 2, ...),
    /// returning the rows' debug text.
    fn rows_of(records: impl Iterator<Item = String>) -> impl Fn(&str) -> String {
        let records = records
            .enumerate()
            .map(|(i, json)| record(i as u64 + 1, &json))
            .collect();
        let source = MemorySource::new(records);
        let options = ExecOptions {
            now: Timestamp::from_micros(0),
            use_indexes: true,
        };
        move |text| {
            let out = prepare(text).unwrap();
            let out = out.run(&source, &Params::new(), &options).unwrap();
            format!("{:?}", out.rows)
        }
    }

    /// Integer averages and deviations are summed exactly, where a float
    /// sum or Welford's running mean loses them: 2^53 + 1 + 1 summed in f64
    /// is 2^53, and 2^60 + 1, 2^60 + 2 and 2^60 + 3 are all 2^60 as floats
    /// (a deviation of 0, not 1). Two values near 6.8e18 one apart have a
    /// deviation of sqrt(1/2), which a difference of their sums taken in
    /// f64 turned into 1.4e11.
    #[test]
    fn integer_averages_and_deviations_are_exact() {
        let values = [("a", 1i64 << 53), ("a", 1), ("a", 1)]
            .into_iter()
            .chain([1, 2, 3].map(|d| ("s", (1i64 << 60) + d)))
            .chain([
                ("b", 6_817_960_789_916_693_799),
                ("b", 6_817_960_789_916_693_798),
            ]);
        let run = rows_of(values.enumerate().map(|(i, (kind, x))| {
            format!(
                r#"{{"kind":"{kind}","target":{{"table":"t"}},"payload":{{"x":{x}}},"produced_at":"2024-01-01T00:0{i}:00Z","producer_id":"p"}}"#
            )
        }));
        let mean = ((1u64 << 53) + 2) as f64 / 3.0;
        assert_ne!(mean, (1u64 << 53) as f64 / 3.0);
        assert_eq!(
            run("a | stats avg(payload.x)"),
            format!("[Values([{:?}])]", serde_json::json!(mean))
        );
        assert_eq!(
            run("s | stats stddev(payload.x)"),
            format!("[Values([{:?}])]", serde_json::json!(1.0))
        );
        assert_eq!(
            run("b | stats stddev(payload.x)"),
            format!("[Values([{:?}])]", serde_json::json!(0.5f64.sqrt()))
        );
    }

    /// The spec orders `latest`, `first`/`last` and `window` by
    /// (`produced_at`, `id`) with no exception for rows a `select` made:
    /// where those columns are kept, they order the rows, whatever order
    /// the rows arrive in (here newest first).
    #[test]
    fn rows_of_columns_order_by_their_produced_at_and_id() {
        // ids 1..=4; 2 and 3 share an instant; 4 is the oldest.
        let at = ["2024-01-02", "2024-01-03", "2024-01-03", "2024-01-01"];
        let run = rows_of(at.iter().map(|day| {
            format!(
                r#"{{"kind":"k","target":{{"table":"t"}},"payload":{{}},"produced_at":"{day}T00:00:00Z","producer_id":"p"}}"#
            )
        }));
        let newest_first =
            "k | sort produced_at desc, id desc | select id, produced_at, kind, target";
        assert_eq!(
            run(&format!("{newest_first} | latest | select id")),
            "[Values([Number(3)])]"
        );
        assert_eq!(
            run(&format!("{newest_first} | stats first(id), last(id)")),
            "[Values([Number(4), Number(3)])]"
        );
        assert_eq!(
            run(&format!(
                "{newest_first} | window count() as n rows -1000 .. 0 | select id, n"
            )),
            "[Values([Number(3), Number(4)]), Values([Number(2), Number(3)]), \
             Values([Number(1), Number(2)]), Values([Number(4), Number(1)])]"
        );
        // An `id` column that is no id orders nothing: rows of one instant
        // keep their arrival (ids 3 then 2 here), as without one.
        let no_id = "k | sort id desc | select produced_at, kind as id, id as x";
        assert_eq!(
            run(&format!("{no_id} | stats first(x), last(x)")),
            "[Values([Number(4), Number(2)])]"
        );
        assert_eq!(
            run(&format!(
                "{no_id} | window last(x) as l rows -9 .. 9 | limit 1 | select l"
            )),
            "[Values([Number(2)])]"
        );
        // Only `id` kept: it orders. Neither kept: arrival order.
        let by_id = "k | sort produced_at desc | select id | stats first(id), last(id)";
        assert_eq!(run(by_id), "[Values([Number(1), Number(4)])]");
        let arrival = "k | sort id desc | select id as x | stats first(x), last(x)";
        assert_eq!(run(arrival), "[Values([Number(4), Number(1)])]");
    }

    /// `window` carries a frame's state into the next (taking out the rows
    /// a sliding frame leaves, where that is exact); every aggregate over
    /// every kind of frame must give what recomputing each frame from
    /// scratch gives, bit for bit.
    #[test]
    fn running_windows_equal_recomputing_every_frame() {
        let mut rng = crate::testdata::SplitMix64::new(11);
        let mut next = |n: u64| rng.below(n);
        let mut records = Vec::new();
        // `vol`: values of every kind, spread wide; `tie`: few values, equal
        // ones of different types among them (1 and 1.0, 0 and -0.0), so
        // extremes, firsts and lasts are often ties that only the order
        // fed breaks.
        for id in 1..=1200u64 {
            let (kind, x) = if id > 800 {
                // `int`: integers only, so sums, averages and deviations
                // slide exactly; now and then one so large that the sum of
                // squares overflows and the deviation turns to floats.
                let x = match next(40) {
                    0 => format!("{}", i64::MAX - next(1000) as i64),
                    1 => format!("{}", i64::MIN + next(1000) as i64),
                    2 => "null".to_owned(),
                    _ => format!("{}", next(2_000_000) as i64 - 1_000_000),
                };
                ("int", x)
            } else if id <= 400 {
                let x = match next(6) {
                    0 => "null".to_owned(),
                    1 => format!("{}.{}", next(1000), next(1000)),
                    2 => format!("-{}", next(50)),
                    3 => format!("\"s{}\"", next(20)),
                    4 => "-0.0".to_owned(),
                    _ => next(100).to_string(),
                };
                ("vol", x)
            } else {
                let x = ["0", "-0.0", "1", "1.0", "\"a\"", "null", "0.0", "\"b\""];
                ("tie", x[next(x.len() as u64) as usize].to_owned())
            };
            let minute = id % 400;
            records.push(record(
                id,
                &format!(
                    r#"{{"kind":"{kind}","target":{{"table":"t{}"}},"payload":{{"x":{x}}},"produced_at":"2024-01-01T{:02}:{:02}:00Z","producer_id":"p"}}"#,
                    next(3),
                    minute / 60,
                    minute % 60
                ),
            ));
        }
        let source = MemorySource::new(records);
        let aggregates = "count() as a, count(payload.x) as b, countif(payload.x > 10) as c, \
             count_distinct(payload.x) as d, sum(payload.x) as e, avg(payload.x) as f, \
             min(payload.x) as g, max(payload.x) as h, stddev(payload.x) as i, \
             percentile(payload.x, 90) as j, first(payload.x) as k, last(payload.x) as l";
        let options = ExecOptions {
            now: Timestamp::from_micros(0),
            use_indexes: true,
        };
        for frame in [
            "-1000 .. 0",
            "-1000 .. 3",
            "-1000 .. -2",
            "-1000 .. 1000",
            "-3 .. 0",
            "-7 .. -1",
            "0 .. 1000",
            "2 .. 5",
            "-150 .. 0",
            "-40 .. 40",
            "-100 .. -50",
            "5 .. 200",
            "-1 .. -1",
        ] {
            for (kind, by) in [
                ("int", ""),
                ("int", " by target"),
                ("vol", ""),
                ("vol", " by target"),
                ("tie", ""),
                ("tie", " by target"),
            ] {
                let text = format!("{kind} | window {aggregates}{by} rows {frame}");
                let query = prepare(&text).unwrap();
                let run = |reuse: bool| {
                    super::REUSE_FRAMES.with(|r| r.set(reuse));
                    let out = query.run(&source, &Params::new(), &options);
                    super::REUSE_FRAMES.with(|r| r.set(true));
                    // Debug text tells -0.0 from 0.0, which `==` does not.
                    format!("{:?}", out.unwrap())
                };
                // Not `assert_eq!`: the outputs are hundreds of kilobytes.
                assert!(run(true) == run(false), "a running frame differs: {text}");
            }
        }
    }
}
