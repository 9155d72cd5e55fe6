//! State of `portwatch top` apart from drawing: the bucket states (held by the one
//! [`Reducer`], fed with events and reconciled with rescans), per-row UI metadata (last
//! change, highlight), sorting, filtering, scrolling, the recent-transitions ring and the
//! port pressure of the header netns (computed by [`crate::pressure`]). Pure logic: no
//! terminal, no I/O, time passed in.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::{
    model::{
        BucketInfo, BucketKey, NetInfo, Scope, Snapshot, SocketEvent, Transition, TransitionKind,
    },
    pressure::{pressure, Pressure},
    reducer::Reducer,
    render::columns::Column,
};

/// How many transitions the recent pane keeps (a ring: allocated once, never grows).
pub const RECENT_CAPACITY: usize = 200;
/// How long a changed cell stays highlighted.
pub const HIGHLIGHT_FOR: Duration = Duration::from_millis(1500);
/// Longest filter text accepted.
pub const FILTER_MAX: usize = 32;

/// Which cells of a row changed (for highlighting): the value columns whose cell text
/// changed, or the whole bucket when it is new.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Bit `i` set: the cell of `Column::ALL[i]` changed.
    cells: u16,
    /// The bucket is new (created since the first scan).
    pub new: bool,
}

impl Changed {
    pub fn any(self) -> bool {
        self.cells != 0 || self.new
    }

    /// Whether the cell of `column` changed.
    pub fn column(self, column: Column) -> bool {
        Column::ALL
            .iter()
            .position(|c| *c == column)
            .is_some_and(|i| self.cells & (1 << i) != 0)
    }

    fn between(old: Option<&BucketInfo>, new: &BucketInfo) -> Changed {
        let Some(old) = old else {
            return Changed {
                cells: 0,
                new: true,
            };
        };
        let mut cells = 0;
        for (i, c) in Column::ALL.iter().enumerate() {
            if c.differs(old, new) {
                cells |= 1 << i;
            }
        }
        Changed { cells, new: false }
    }
}

/// The last change seen on a bucket: when it arrived here, and the transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastChange {
    pub at: Instant,
    pub transition: Transition,
}

/// One entry of the recent-transitions pane.
#[derive(Clone, Debug)]
pub struct RecentEntry {
    /// When it arrived here.
    pub at: Instant,
    pub transition: Transition,
}

/// What `top` keeps about a bucket beside its state: UI metadata only.
#[derive(Clone, Debug, Default)]
pub struct RowMeta {
    pub last_change: Option<LastChange>,
    /// Cells changed by the latest change (see [`TopRow::highlight`]).
    pub changed: Changed,
    pub changed_at: Option<Instant>,
}

/// One bucket row of the live table: the reducer's state and the row's metadata.
#[derive(Clone, Copy, Debug)]
pub struct TopRow<'a> {
    pub key: BucketKey,
    pub info: BucketInfo,
    meta: Option<&'a RowMeta>,
}

impl<'a> TopRow<'a> {
    pub fn last_change(&self) -> Option<&'a LastChange> {
        self.meta.and_then(|m| m.last_change.as_ref())
    }

    /// The cells to highlight at `now`: those of the latest change, for [`HIGHLIGHT_FOR`].
    pub fn highlight(&self, now: Instant) -> Changed {
        match self.meta {
            Some(m) => match m.changed_at {
                Some(at) if now.saturating_duration_since(at) < HIGHLIGHT_FOR => m.changed,
                _ => Changed::default(),
            },
            None => Changed::default(),
        }
    }
}

/// Sort orders; `s` cycles through them in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Port,
    Netns,
    /// Most owners first.
    Owners,
    /// -1 first, then 0, then +1 (fastreuseport as tie-break).
    Fastreuse,
    /// Most recently changed first; never-changed rows last.
    LastChange,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Port => SortKey::Netns,
            SortKey::Netns => SortKey::Owners,
            SortKey::Owners => SortKey::Fastreuse,
            SortKey::Fastreuse => SortKey::LastChange,
            SortKey::LastChange => SortKey::Port,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Port => "port",
            SortKey::Netns => "netns",
            SortKey::Owners => "owners",
            SortKey::Fastreuse => "fastreuse",
            SortKey::LastChange => "last change",
        }
    }
}

/// Whether a row matches the filter text: empty matches all; otherwise the port equals
/// the text as a number, or the netns (decimal) contains the text.
pub fn matches_filter(key: &BucketKey, filter: &str) -> bool {
    let f = filter.trim();
    if f.is_empty() {
        return true;
    }
    if f.parse::<u16>().is_ok_and(|p| p == key.port) {
        return true;
    }
    let mut digits = [0u8; 10];
    decimal(key.netns, &mut digits).contains(f)
}

/// Formats `n` in decimal into `buf` without allocating.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        // `n % 10` < 10, so the cast cannot truncate.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// Sorts `keys` by `sort` over the bucket states of `buckets` and the last changes of
/// `meta`; `reverse` flips the whole order. Ties are broken by (netns, port, l3mdev), so
/// the order is total and deterministic.
pub fn sort_keys(
    keys: &mut [BucketKey],
    buckets: &Reducer,
    meta: &HashMap<BucketKey, RowMeta>,
    sort: SortKey,
    reverse: bool,
) {
    use std::cmp::Ordering;
    let base = |a: &BucketKey, b: &BucketKey| {
        (a.netns, a.port, a.l3mdev).cmp(&(b.netns, b.port, b.l3mdev))
    };
    let changed_at = |k: &BucketKey| {
        meta.get(k)
            .and_then(|m| m.last_change.as_ref())
            .map(|c| c.at)
    };
    // Bucket states are looked up only by the orders that read them: sorting 10,000 keys
    // by port costs no map lookup.
    let by_state = |a: &BucketKey, b: &BucketKey| match (buckets.get(a), buckets.get(b)) {
        (Some(x), Some(y)) if sort == SortKey::Owners => y.owners.n.cmp(&x.owners.n),
        (Some(x), Some(y)) => (x.fastreuse, x.fastreuseport).cmp(&(y.fastreuse, y.fastreuseport)),
        _ => Ordering::Equal,
    };
    keys.sort_unstable_by(|a, b| {
        let primary = match sort {
            SortKey::Port => (a.port, a.netns, a.l3mdev).cmp(&(b.port, b.netns, b.l3mdev)),
            SortKey::Netns => Ordering::Equal,
            SortKey::Owners | SortKey::Fastreuse => by_state(a, b),
            SortKey::LastChange => match (changed_at(a), changed_at(b)) {
                (Some(p), Some(q)) => q.cmp(&p),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
        };
        let ord = primary.then_with(|| base(a, b));
        if reverse {
            ord.reverse()
        } else {
            ord
        }
    });
}

/// The ephemeral range of the header netns, as last asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeState {
    Unknown,
    Known(NetInfo),
    Failed(String),
}

/// What the run loop should do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Key ignored.
    Nothing,
    /// State changed: draw again now.
    Redraw,
    /// Leave `top`.
    Quit,
    /// Un-paused: rescan now.
    Resume,
}

/// The whole state of `portwatch top`.
#[derive(Debug)]
pub struct TopApp {
    /// The bucket states: the one owner of them.
    buckets: Reducer,
    meta: HashMap<BucketKey, RowMeta>,
    /// The buckets changed since the last plain frame, with their latest change (kept
    /// only when the plain output prints changed rows: see [`TopApp::track_changes`]).
    changes: Option<HashMap<BucketKey, LastChange>>,
    view: Vec<BucketKey>,
    view_dirty: bool,
    pub sort: SortKey,
    pub reverse: bool,
    /// The applied filter ("" = none).
    pub filter: String,
    /// The filter being typed, while the input is open.
    pub input: Option<String>,
    pub paused: bool,
    /// Index of the selected row in the view.
    pub selected: usize,
    /// First view row on screen.
    pub offset: usize,
    /// Table rows that fit on screen (set by the run loop from the layout).
    pub page: usize,
    recent: VecDeque<RecentEntry>,
    pub range: RangeState,
    pub pressure: Option<Pressure>,
    scratch: Vec<u8>,
    pub header_netns: u32,
    pub backend: String,
    pub dropped: u64,
    /// `dropped` as the last walk left it (a walk after a loss repairs the table).
    pub dropped_at_walk: u64,
    /// The last walk cut some owner list short (owner counts are lower bounds).
    pub truncated: bool,
    /// The last walk did not cover its whole scope: buckets may be missing.
    pub incomplete: bool,
    pub scans: u64,
    pub last_scan: Option<Instant>,
    /// CPU time of the last walk (walk, decode, reconcile), set by the run loop.
    pub walk_cost: Option<Duration>,
    /// Time between walks, as last scheduled (none with `--once`).
    pub rescan_every: Option<Duration>,
}

impl TopApp {
    pub fn new(header_netns: u32, backend: String) -> TopApp {
        TopApp {
            buckets: Reducer::new(),
            meta: HashMap::with_capacity(1024),
            changes: None,
            view: Vec::with_capacity(1024),
            view_dirty: true,
            sort: SortKey::Port,
            reverse: false,
            filter: String::with_capacity(FILTER_MAX),
            input: None,
            paused: false,
            selected: 0,
            offset: 0,
            page: 20,
            recent: VecDeque::with_capacity(RECENT_CAPACITY),
            range: RangeState::Unknown,
            pressure: None,
            scratch: Vec::with_capacity(usize::from(u16::MAX) + 1),
            header_netns,
            backend,
            dropped: 0,
            dropped_at_walk: 0,
            truncated: false,
            incomplete: false,
            scans: 0,
            last_scan: None,
            walk_cost: None,
            rescan_every: None,
        }
    }

    /// Starts keeping the buckets changed between plain frames (see
    /// [`TopApp::take_changes`]).
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(HashMap::new);
    }

    /// The buckets changed since the previous call (or since [`TopApp::track_changes`]),
    /// each with its latest change, in the view's order (sort and filter); a bucket gone
    /// since has no row in the reducer any more and its change says how it went.
    pub fn take_changes(&mut self) -> Vec<(BucketKey, LastChange)> {
        let Some(changes) = self.changes.as_mut() else {
            return Vec::new();
        };
        let mut keys: Vec<BucketKey> = changes
            .keys()
            .filter(|k| matches_filter(k, &self.filter))
            .copied()
            .collect();
        sort_keys(
            &mut keys,
            &self.buckets,
            &self.meta,
            self.sort,
            self.reverse,
        );
        let out = keys
            .into_iter()
            .filter_map(|k| changes.get(&k).map(|c| (k, c.clone())))
            .collect();
        changes.clear();
        out
    }

    /// Records a change of `key` for the next plain frame, when changes are kept.
    fn remember(&mut self, key: BucketKey, change: &LastChange) {
        if let Some(changes) = self.changes.as_mut() {
            changes.insert(key, change.clone());
        }
    }

    /// The bucket states the table shows.
    pub fn buckets(&self) -> &Reducer {
        &self.buckets
    }

    /// The row of a bucket the reducer knows.
    pub fn row(&self, key: &BucketKey) -> Option<TopRow<'_>> {
        let info = *self.buckets.get(key)?;
        Some(TopRow {
            key: *key,
            info,
            meta: self.meta.get(key),
        })
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Recent transitions, newest first.
    pub fn recent(&self) -> impl Iterator<Item = &RecentEntry> {
        self.recent.iter().rev()
    }

    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// Feeds events to the reducer, in order; each transition becomes its bucket's last
    /// change (highlighting the cells it changed) and an entry of the recent pane. A
    /// failed bind/connect on a port without a bucket only goes to the pane.
    pub fn apply_events(&mut self, events: Vec<SocketEvent>, now: Instant) {
        if events.is_empty() {
            return;
        }
        for ev in &events {
            for t in self.buckets.apply(ev) {
                self.note(&t, now);
                if self.recent.len() == RECENT_CAPACITY {
                    self.recent.pop_front();
                }
                self.recent.push_back(RecentEntry {
                    at: now,
                    transition: t,
                });
            }
        }
        self.view_dirty = true;
        self.update_pressure();
    }

    /// Records `t` in the metadata of its row (the reducer already applied it).
    fn note(&mut self, t: &Transition, now: Instant) {
        let change = LastChange {
            at: now,
            transition: t.clone(),
        };
        let Some(after) = t.after else {
            if t.kind == TransitionKind::BucketDestroyed {
                self.meta.remove(&t.key);
                self.remember(t.key, &change);
            } else if self.buckets.get(&t.key).is_some() {
                self.remember(t.key, &change);
                self.meta.entry(t.key).or_default().last_change = Some(change);
            }
            return;
        };
        self.remember(t.key, &change);
        let changed = Changed::between(t.before.as_ref(), &after);
        let meta = self.meta.entry(t.key).or_default();
        meta.last_change = Some(change);
        if changed.any() {
            meta.changed = changed;
            meta.changed_at = Some(now);
        }
    }

    /// Reconciles the bucket states with a fresh walk of `scope`, which catches what the
    /// event stream missed (TIME-WAIT expiry, dropped events): each bucket it corrects gets
    /// that correction as its last change ("(rescan)"), except on the first walk, which
    /// only fills the table. `ts_ns` is the kernel monotonic time of the walk.
    pub fn apply_snapshot(&mut self, snap: Snapshot, scope: Scope, ts_ns: u64, now: Instant) {
        let first = self.scans == 0;
        let corrections = self.buckets.reconcile(&snap, scope, ts_ns);
        // A bucket corrected in several fields has one correction per field, each with the
        // whole state before and after: the first one says it all.
        let mut done: HashSet<BucketKey> = HashSet::with_capacity(corrections.len());
        let changed = first || !corrections.is_empty();
        for t in corrections {
            if !done.insert(t.key) {
                continue;
            }
            match t.after {
                None => {
                    self.meta.remove(&t.key);
                    if !first {
                        self.remember(
                            t.key,
                            &LastChange {
                                at: now,
                                transition: t,
                            },
                        );
                    }
                }
                Some(after) if !first => {
                    let change = LastChange {
                        at: now,
                        transition: t,
                    };
                    self.remember(change.transition.key, &change);
                    let meta = self.meta.entry(change.transition.key).or_default();
                    meta.changed = Changed::between(change.transition.before.as_ref(), &after);
                    meta.changed_at = Some(now);
                    meta.last_change = Some(change);
                }
                Some(_) => {}
            }
        }
        self.truncated = snap.owners_truncated;
        self.incomplete = !snap.complete;
        self.scans += 1;
        self.last_scan = Some(now);
        // A walk that corrected nothing leaves the view and the pressure as they are.
        if changed {
            self.view_dirty = true;
            self.update_pressure();
        }
    }

    pub fn set_port_range(&mut self, range: RangeState) {
        if self.range != range {
            self.range = range;
            self.update_pressure();
        }
    }

    fn update_pressure(&mut self) {
        self.pressure = match &self.range {
            RangeState::Known(range) => Some(pressure(
                self.buckets.in_netns(self.header_netns),
                self.header_netns,
                range,
                &mut self.scratch,
            )),
            _ => None,
        };
    }

    /// Rebuilds the sorted, filtered view if anything changed, and keeps the selection
    /// and the scroll offset inside it.
    pub fn refresh_view(&mut self) {
        if self.view_dirty {
            self.view.clear();
            let filter = self.filter.as_str();
            self.view.extend(
                self.buckets
                    .known()
                    .map(|(k, _)| *k)
                    .filter(|k| matches_filter(k, filter)),
            );
            sort_keys(
                &mut self.view,
                &self.buckets,
                &self.meta,
                self.sort,
                self.reverse,
            );
            self.view_dirty = false;
        }
        self.clamp_scroll();
    }

    /// The sorted, filtered rows (call [`TopApp::refresh_view`] first).
    pub fn view(&self) -> impl Iterator<Item = TopRow<'_>> + '_ {
        self.view.iter().filter_map(|k| self.row(k))
    }

    pub fn view_len(&self) -> usize {
        self.view.len()
    }

    /// The keys of the sorted, filtered rows.
    pub fn view_keys(&self) -> &[BucketKey] {
        &self.view
    }

    /// The rows on screen: `page` rows from `offset`.
    pub fn visible(&self) -> impl Iterator<Item = TopRow<'_>> + '_ {
        self.view().skip(self.offset).take(self.page.max(1))
    }

    fn clamp_scroll(&mut self) {
        let n = self.view.len();
        let page = self.page.max(1);
        self.selected = if n == 0 { 0 } else { self.selected.min(n - 1) };
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        self.offset = self.offset.min(n.saturating_sub(page));
    }

    fn move_selection(&mut self, delta: isize) {
        self.selected = self.selected.saturating_add_signed(delta);
        self.clamp_scroll();
    }

    /// Handles one key; see [`KeyOutcome`].
    pub fn handle_key(&mut self, key: KeyEvent) -> KeyOutcome {
        if key.kind != KeyEventKind::Press {
            return KeyOutcome::Nothing;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return KeyOutcome::Quit;
        }
        if let Some(input) = self.input.as_mut() {
            match key.code {
                KeyCode::Enter => {
                    self.filter.clear();
                    self.filter.push_str(input.trim());
                    self.input = None;
                }
                KeyCode::Esc => {
                    self.filter.clear();
                    self.input = None;
                }
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Char(c) if !c.is_control() && input.chars().count() < FILTER_MAX => {
                    input.push(c)
                }
                _ => return KeyOutcome::Nothing,
            }
            self.selected = 0;
            self.offset = 0;
            self.view_dirty = true;
            return KeyOutcome::Redraw;
        }
        let page = self.page.max(1) as isize;
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return KeyOutcome::Quit,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.view_dirty = true;
            }
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                self.view_dirty = true;
            }
            KeyCode::Char('/') | KeyCode::Char('f') => {
                let mut s = String::with_capacity(FILTER_MAX);
                s.push_str(&self.filter);
                self.input = Some(s);
            }
            KeyCode::Char('p') => {
                self.paused = !self.paused;
                if !self.paused {
                    return KeyOutcome::Resume;
                }
            }
            KeyCode::Char('j') | KeyCode::Down => self.move_selection(1),
            KeyCode::Char('k') | KeyCode::Up => self.move_selection(-1),
            KeyCode::PageDown => self.move_selection(page),
            KeyCode::PageUp => self.move_selection(-page),
            KeyCode::Char('g') | KeyCode::Home => self.move_selection(isize::MIN),
            KeyCode::Char('G') | KeyCode::End => self.move_selection(isize::MAX),
            _ => return KeyOutcome::Nothing,
        }
        KeyOutcome::Redraw
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::fixtures::{ev, failed, info, key, net, snap},
        *,
    };
    use crate::{model::Op, render::transition::describe};

    /// A rescan of every namespace.
    fn rescan(app: &mut TopApp, snap: Snapshot, now: Instant) {
        app.apply_snapshot(snap, Scope::ALL, 0, now);
    }

    /// A row's last change as `top` shows it.
    fn what(r: &TopRow<'_>) -> Option<String> {
        r.last_change().map(|c| describe(&c.transition))
    }

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }
    fn ports(app: &TopApp) -> Vec<u16> {
        app.view().map(|r| r.key.port).collect()
    }

    #[test]
    fn filter_matches_port_or_netns_substring() {
        let k = key(4026531840, 8080);
        assert!(matches_filter(&k, ""));
        assert!(matches_filter(&k, " 8080 "));
        assert!(!matches_filter(&k, "80"));
        assert!(matches_filter(&k, "40265"));
        assert!(matches_filter(&k, "1840"));
        assert!(!matches_filter(&k, "999"));
        assert!(!matches_filter(&k, "x"));
        assert!(matches_filter(&key(0, 1), "0"));
        let mut b = [0u8; 10];
        assert_eq!(decimal(u32::MAX, &mut b), "4294967295");
        assert_eq!(decimal(0, &mut b), "0");
    }

    #[test]
    fn sorting_by_each_key_and_reverse() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        rescan(
            &mut app,
            snap(&[
                (key(2, 80), info(0, -1, 1)),
                (key(1, 443), info(1, -1, 5)),
                (key(1, 22), info(-1, -1, 3)),
            ]),
            t0,
        );
        app.refresh_view();
        assert_eq!(ports(&app), [22, 80, 443]);
        app.sort = SortKey::Netns;
        app.view_dirty = true;
        app.refresh_view();
        assert_eq!(ports(&app), [22, 443, 80]);
        app.sort = SortKey::Owners;
        app.view_dirty = true;
        app.refresh_view();
        assert_eq!(ports(&app), [443, 22, 80]);
        app.sort = SortKey::Fastreuse;
        app.view_dirty = true;
        app.refresh_view();
        assert_eq!(ports(&app), [22, 80, 443]);
        // Last change: change 80 then 443; 22 never changed.
        app.apply_events(
            vec![ev(Op::Accept, key(2, 80), Some(info(0, -1, 2)))],
            t0 + Duration::from_secs(1),
        );
        app.apply_events(
            vec![ev(Op::Accept, key(1, 443), Some(info(1, -1, 6)))],
            t0 + Duration::from_secs(2),
        );
        app.sort = SortKey::LastChange;
        app.view_dirty = true;
        app.refresh_view();
        assert_eq!(ports(&app), [443, 80, 22]);
        assert_eq!(
            app.handle_key(press(KeyCode::Char('r'))),
            KeyOutcome::Redraw
        );
        app.refresh_view();
        assert_eq!(ports(&app), [22, 80, 443]);
    }

    #[test]
    fn s_cycles_sort_keys() {
        let mut app = TopApp::new(1, String::new());
        let mut seen = vec![app.sort];
        for _ in 0..5 {
            app.handle_key(press(KeyCode::Char('s')));
            seen.push(app.sort);
        }
        assert_eq!(
            seen,
            [
                SortKey::Port,
                SortKey::Netns,
                SortKey::Owners,
                SortKey::Fastreuse,
                SortKey::LastChange,
                SortKey::Port
            ]
        );
    }

    #[test]
    fn merge_creates_updates_and_destroys() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        rescan(&mut app, snap(&[(key(1, 1234), info(0, -1, 1))]), t0);
        let r = app.row(&key(1, 1234)).expect("row");
        assert!(r.last_change().is_none(), "first scan is not a change");
        assert!(!r.highlight(t0).any());

        let t1 = t0 + Duration::from_millis(100);
        app.apply_events(
            vec![
                ev(Op::Connect, key(1, 60000), Some(info(-1, -1, 1))),
                ev(Op::Connect, key(1, 60000), Some(info(-1, -1, 2))),
            ],
            t1,
        );
        let r = app.row(&key(1, 60000)).expect("created");
        assert_eq!(r.info, info(-1, -1, 2));
        assert_eq!(what(&r).as_deref(), Some("owners 1→2 (connect)"));
        assert!(r.highlight(t1).column(Column::Owners));
        assert!(!r.highlight(t1 + HIGHLIGHT_FOR).any(), "highlight expires");

        // A plain bind(): one more owner, and -1 -> 0.
        app.apply_events(vec![ev(Op::Bind, key(1, 60000), Some(info(0, -1, 3)))], t1);
        let r = app.row(&key(1, 60000)).expect("row");
        assert_eq!(what(&r).as_deref(), Some("fastreuse -1→0 (bind)"));
        let h = r.highlight(t1);
        assert!(
            h.column(Column::Fastreuse)
                && h.column(Column::Owners)
                && !h.column(Column::Fastreuseport)
                && !h.new
        );

        app.apply_events(vec![ev(Op::Close, key(1, 60000), None)], t1);
        assert!(app.row(&key(1, 60000)).is_none());
        assert_eq!(app.len(), 1);
        assert_eq!(app.recent_len(), 5);
        let pane: Vec<String> = app.recent().map(|e| describe(&e.transition)).collect();
        assert_eq!(
            pane,
            [
                "destroyed (close)",
                "fastreuse -1→0 (bind)",
                "owners 2→3 (bind)",
                "owners 1→2 (connect)",
                "created -1/-1 (connect)"
            ]
        );
        assert_eq!(
            app.recent().next().map(|e| e.transition.kind),
            Some(TransitionKind::BucketDestroyed),
            "newest first"
        );
    }

    #[test]
    fn failures_mark_last_change_without_touching_state() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        rescan(&mut app, snap(&[(key(1, 60000), info(0, -1, 1))]), t0);
        let t = failed(Op::Bind, key(1, 60000), Some(info(0, -1, 1)), -98);
        let miss = failed(Op::Connect, key(1, 5), None, 99);
        app.apply_events(vec![t, miss], t0);
        let r = app.row(&key(1, 60000)).expect("row");
        assert_eq!(r.info, info(0, -1, 1));
        assert_eq!(what(&r).as_deref(), Some("bind failed EADDRINUSE (nc)"));
        assert!(
            app.row(&key(1, 5)).is_none(),
            "no bucket invented for a failure"
        );
        assert_eq!(app.recent_len(), 2);
    }

    #[test]
    fn rescan_replaces_rows_and_reports_what_events_missed() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        rescan(
            &mut app,
            snap(&[
                (key(1, 80), info(0, -1, 3)),
                (key(1, 60000), info(-1, -1, 1)),
            ]),
            t0,
        );
        let t1 = t0 + Duration::from_secs(1);
        // TIME-WAIT expiry: port 60000 vanished, port 80 lost an owner, 9000 appeared.
        let mut s = snap(&[(key(1, 80), info(0, -1, 2)), (key(1, 9000), info(0, 0, 1))]);
        s.owners_truncated = true;
        rescan(&mut app, s, t1);
        assert!(app.row(&key(1, 60000)).is_none());
        let r = app.row(&key(1, 80)).expect("80");
        assert_eq!(r.info.owners.n, 2);
        assert_eq!(what(&r).as_deref(), Some("owners 3→2 (rescan)"));
        let r = app.row(&key(1, 9000)).expect("9000");
        assert!(r.highlight(t1).new);
        assert_eq!(what(&r).as_deref(), Some("appeared (rescan)"));
        assert!(app.truncated);
        assert_eq!(app.scans, 2);
        // An unchanged rescan keeps the last change and does not re-highlight.
        rescan(
            &mut app,
            snap(&[(key(1, 80), info(0, -1, 2))]),
            t1 + HIGHLIGHT_FOR,
        );
        let r = app.row(&key(1, 80)).expect("80");
        assert_eq!(r.last_change().map(|c| c.at), Some(t1));
        assert!(!r.highlight(t1 + HIGHLIGHT_FOR).any());
    }

    #[test]
    fn changes_between_plain_frames_are_kept_only_when_asked() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        let three = snap(&[
            (key(1, 80), info(0, -1, 1)),
            (key(1, 443), info(0, -1, 1)),
            (key(1, 8080), info(0, -1, 1)),
        ]);
        rescan(&mut app, three, t0);
        app.apply_events(vec![ev(Op::Bind, key(1, 80), Some(info(0, -1, 2)))], t0);
        assert!(app.take_changes().is_empty(), "not kept unless asked");

        app.track_changes();
        let t1 = t0 + Duration::from_secs(1);
        app.apply_events(
            vec![
                ev(Op::Bind, key(1, 9000), Some(info(0, -1, 1))),
                ev(Op::Bind, key(1, 80), Some(info(0, -1, 3))),
                ev(Op::Close, key(1, 443), None),
            ],
            t1,
        );
        // The rescan corrects 8080 (an owner gone unseen); 80 and 9000 are as walked.
        let s = snap(&[
            (key(1, 80), info(0, -1, 3)),
            (key(1, 8080), info(0, -1, 2)),
            (key(1, 9000), info(0, -1, 1)),
        ]);
        rescan(&mut app, s.clone(), t1);
        let changes = app.take_changes();
        let got: Vec<(u16, String)> = changes
            .iter()
            .map(|(k, c)| (k.port, describe(&c.transition)))
            .collect();
        assert_eq!(
            got,
            [
                (80, "owners 2→3 (bind)".to_owned()),
                (443, "destroyed (close)".to_owned()),
                (8080, "owners 1→2 (rescan)".to_owned()),
                (9000, "created 0/-1 (bind)".to_owned()),
            ],
            "in the view's order, the latest change of each"
        );
        assert!(app.row(&key(1, 443)).is_none());
        assert!(app.take_changes().is_empty(), "taken once");

        // A walk that corrects nothing changes nothing, and the filter applies.
        rescan(&mut app, s, t1);
        assert!(app.take_changes().is_empty());
        app.filter = "9000".into();
        app.apply_events(
            vec![
                ev(Op::Bind, key(1, 9000), Some(info(0, -1, 2))),
                ev(Op::Bind, key(1, 80), Some(info(0, -1, 4))),
            ],
            t1,
        );
        let ports: Vec<u16> = app.take_changes().iter().map(|(k, _)| k.port).collect();
        assert_eq!(ports, [9000]);
    }

    #[test]
    fn a_walk_that_corrects_nothing_leaves_the_view_alone() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        let s = snap(&[(key(1, 80), info(0, -1, 1)), (key(1, 22), info(0, -1, 1))]);
        rescan(&mut app, s.clone(), t0);
        app.refresh_view();
        assert!(!app.view_dirty);
        rescan(&mut app, s, t0);
        assert!(!app.view_dirty, "nothing to sort again");
        assert_eq!(app.scans, 2);
        rescan(&mut app, snap(&[(key(1, 80), info(0, -1, 1))]), t0);
        assert!(app.view_dirty);
        app.refresh_view();
        assert_eq!(ports(&app), [80]);
    }

    #[test]
    fn recent_ring_is_bounded_and_does_not_grow() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        let cap = app.recent.capacity();
        for i in 0..(RECENT_CAPACITY as u16 + 50) {
            app.apply_events(vec![ev(Op::Bind, key(1, i), Some(info(0, -1, 1)))], t0);
        }
        assert_eq!(app.recent_len(), RECENT_CAPACITY);
        assert_eq!(app.recent.capacity(), cap, "ring must not reallocate");
        assert_eq!(
            app.recent().next().map(|e| e.transition.key.port),
            Some(RECENT_CAPACITY as u16 + 49)
        );
        assert_eq!(app.recent().last().map(|e| e.transition.key.port), Some(50));
    }

    #[test]
    fn pressure_follows_merges_and_range() {
        let t0 = Instant::now();
        let mut app = TopApp::new(7, String::new());
        rescan(&mut app, snap(&[(key(7, 60000), info(-1, -1, 1))]), t0);
        assert_eq!(app.pressure, None, "range not known yet");
        app.set_port_range(RangeState::Known(net(60000, 60001)));
        assert_eq!(
            app.pressure.map(|p| (p.free, p.shared, p.blocked)),
            Some((1, 1, 0))
        );
        app.apply_events(vec![ev(Op::Bind, key(7, 60000), Some(info(0, -1, 2)))], t0);
        assert_eq!(
            app.pressure.map(|p| (p.free, p.shared, p.blocked)),
            Some((1, 0, 1))
        );
        app.set_port_range(RangeState::Failed("no such netns".into()));
        assert_eq!(app.pressure, None);
    }

    #[test]
    fn filter_input_keys() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        rescan(
            &mut app,
            snap(&[
                (key(1, 80), info(0, -1, 1)),
                (key(1, 8080), info(0, -1, 1)),
                (key(2, 22), info(0, -1, 1)),
            ]),
            t0,
        );
        app.refresh_view();
        assert_eq!(app.view_len(), 3);
        app.handle_key(press(KeyCode::Char('/')));
        assert_eq!(app.input.as_deref(), Some(""));
        for c in "8080".chars() {
            app.handle_key(press(KeyCode::Char(c)));
        }
        // Typing does not apply yet; 'q' while typing is text, not quit.
        app.refresh_view();
        assert_eq!(app.view_len(), 3);
        assert_eq!(
            app.handle_key(press(KeyCode::Char('q'))),
            KeyOutcome::Redraw
        );
        app.handle_key(press(KeyCode::Backspace));
        assert_eq!(app.handle_key(press(KeyCode::Enter)), KeyOutcome::Redraw);
        assert_eq!(app.filter, "8080");
        assert_eq!(app.input, None);
        app.refresh_view();
        assert_eq!(ports(&app), [8080]);
        // 'f' reopens with the current text; Esc clears the filter.
        app.handle_key(press(KeyCode::Char('f')));
        assert_eq!(app.input.as_deref(), Some("8080"));
        app.handle_key(press(KeyCode::Esc));
        assert_eq!((app.filter.as_str(), app.input.is_none()), ("", true));
        app.refresh_view();
        assert_eq!(app.view_len(), 3);
        // netns substring
        app.handle_key(press(KeyCode::Char('/')));
        app.handle_key(press(KeyCode::Char('2')));
        app.handle_key(press(KeyCode::Enter));
        app.refresh_view();
        assert_eq!(ports(&app), [22]);
    }

    #[test]
    fn quit_pause_and_release_events() {
        let mut app = TopApp::new(1, String::new());
        assert_eq!(app.handle_key(press(KeyCode::Char('q'))), KeyOutcome::Quit);
        assert_eq!(app.handle_key(press(KeyCode::Esc)), KeyOutcome::Quit);
        assert_eq!(
            app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            KeyOutcome::Quit
        );
        app.handle_key(press(KeyCode::Char('/')));
        assert_eq!(
            app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            KeyOutcome::Quit,
            "Ctrl-C quits even while typing a filter"
        );
        let mut app = TopApp::new(1, String::new());
        assert_eq!(
            app.handle_key(press(KeyCode::Char('p'))),
            KeyOutcome::Redraw
        );
        assert!(app.paused);
        assert_eq!(
            app.handle_key(press(KeyCode::Char('p'))),
            KeyOutcome::Resume
        );
        assert!(!app.paused);
        let mut release = press(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(app.handle_key(release), KeyOutcome::Nothing);
        assert_eq!(
            app.handle_key(press(KeyCode::Char('z'))),
            KeyOutcome::Nothing
        );
    }

    #[test]
    fn scrolling_keeps_selection_on_screen() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        let rows: Vec<_> = (1..=50).map(|p| (key(1, p), info(0, -1, 1))).collect();
        rescan(&mut app, snap(&rows), t0);
        app.page = 10;
        app.refresh_view();
        app.handle_key(press(KeyCode::Char('k')));
        assert_eq!((app.selected, app.offset), (0, 0));
        for _ in 0..12 {
            app.handle_key(press(KeyCode::Char('j')));
        }
        assert_eq!((app.selected, app.offset), (12, 3));
        app.handle_key(press(KeyCode::PageDown));
        assert_eq!((app.selected, app.offset), (22, 13));
        app.handle_key(press(KeyCode::End));
        assert_eq!((app.selected, app.offset), (49, 40));
        assert_eq!(app.visible().map(|r| r.key.port).next(), Some(41));
        app.handle_key(press(KeyCode::PageUp));
        assert_eq!((app.selected, app.offset), (39, 39));
        app.handle_key(press(KeyCode::Home));
        assert_eq!((app.selected, app.offset), (0, 0));
        // Rows disappearing pull the selection back inside the view.
        app.handle_key(press(KeyCode::End));
        rescan(&mut app, snap(&rows[..5]), t0);
        app.refresh_view();
        assert_eq!((app.selected, app.offset), (4, 0));
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn arb_info() -> impl Strategy<Value = BucketInfo> {
            (-1i8..=1, -1i8..=1, 0u32..5, any::<bool>()).prop_map(|(fr, frp, n, truncated)| {
                BucketInfo {
                    fastreuse: crate::model::Fastreuse(fr),
                    fastreuseport: crate::model::Fastreuse(frp),
                    owners: crate::model::OwnerCount { n, truncated },
                }
            })
        }
        fn arb_key() -> impl Strategy<Value = BucketKey> {
            (1u32..4, 0i32..2, 0u16..40).prop_map(|(netns, l3mdev, port)| BucketKey {
                netns,
                l3mdev,
                port,
            })
        }
        fn arb_event() -> impl Strategy<Value = SocketEvent> {
            let ops = prop_oneof![
                Just(Op::Bind),
                Just(Op::Listen),
                Just(Op::Connect),
                Just(Op::Accept),
                Just(Op::Close),
                Just(Op::Release),
                Just(Op::Timewait),
            ];
            let errno = prop_oneof![3 => Just(0i32), 1 => Just(98i32)];
            (ops, arb_key(), proptest::option::of(arb_info()), errno)
                .prop_map(|(op, k, after, e)| failed(op, k, after, e))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn a_rescan_has_the_last_word(
                first in proptest::collection::vec((arb_key(), arb_info()), 0..30),
                events in proptest::collection::vec(arb_event(), 0..40),
                last in proptest::collection::vec((arb_key(), arb_info()), 0..30),
            ) {
                let t0 = Instant::now();
                let mut app = TopApp::new(1, String::new());
                rescan(&mut app, snap(&first), t0);
                app.apply_events(events, t0);
                rescan(&mut app, snap(&last), t0);
                // Later duplicates win, as in a map.
                let expected: HashMap<BucketKey, BucketInfo> = last.iter().copied().collect();
                prop_assert_eq!(app.len(), expected.len());
                for (k, i) in &expected {
                    prop_assert_eq!(app.row(k).map(|r| r.info), Some(*i));
                }
            }

            #[test]
            fn views_are_sorted_permutations_and_reverse_is_exact(
                rows in proptest::collection::vec((arb_key(), arb_info()), 0..40),
                sort_steps in 0usize..5,
            ) {
                let t0 = Instant::now();
                let mut app = TopApp::new(1, String::new());
                rescan(&mut app, snap(&rows), t0);
                for _ in 0..sort_steps {
                    app.handle_key(press(KeyCode::Char('s')));
                }
                app.refresh_view();
                let fwd: Vec<BucketKey> = app.view().map(|r| r.key).collect();
                prop_assert_eq!(fwd.len(), app.len());
                let unique: std::collections::HashSet<_> = fwd.iter().collect();
                prop_assert_eq!(unique.len(), fwd.len());
                if app.sort == SortKey::Port {
                    prop_assert!(fwd.windows(2).all(|w| w[0].port <= w[1].port));
                }
                if app.sort == SortKey::Owners {
                    let owners: Vec<u32> = app.view().map(|r| r.info.owners.n).collect();
                    prop_assert!(owners.windows(2).all(|w| w[0] >= w[1]));
                }
                app.handle_key(press(KeyCode::Char('r')));
                app.refresh_view();
                let mut back: Vec<BucketKey> = app.view().map(|r| r.key).collect();
                back.reverse();
                prop_assert_eq!(back, fwd);
            }
        }
    }
}
