//! State of `portwatch top`: rows keyed by [`BucketKey`], merging of transitions and
//! rescans, sorting, filtering, scrolling, the recent-transitions ring and the port
//! pressure of the header netns. Pure logic: no terminal, no I/O, time passed in.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    time::{Duration, Instant},
};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::{
    decode::errno_label,
    model::{BucketInfo, BucketKey, Snapshot, Transition, TransitionKind},
    views::{connect_can_share, fmt_reuse},
};

/// How many transitions the recent pane keeps (a ring: allocated once, never grows).
pub const RECENT_CAPACITY: usize = 200;
/// How long a changed cell stays highlighted.
pub const HIGHLIGHT_FOR: Duration = Duration::from_millis(1500);
/// Longest filter text accepted.
pub const FILTER_MAX: usize = 32;

/// Which cells of a row changed (for highlighting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub fastreuse: bool,
    pub fastreuseport: bool,
    pub owners: bool,
    /// The bucket is new (created since the first scan).
    pub new: bool,
}

impl Changed {
    pub fn any(self) -> bool {
        self.fastreuse || self.fastreuseport || self.owners || self.new
    }

    fn between(old: Option<&BucketInfo>, new: &BucketInfo) -> Changed {
        match old {
            None => Changed {
                new: true,
                ..Changed::default()
            },
            Some(o) => Changed {
                fastreuse: o.fastreuse != new.fastreuse,
                fastreuseport: o.fastreuseport != new.fastreuseport,
                owners: o.owners != new.owners || o.owners_truncated != new.owners_truncated,
                new: false,
            },
        }
    }
}

/// The last change seen on a bucket: when (as received here) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastChange {
    pub at: Instant,
    pub what: String,
}

/// One entry of the recent-transitions pane.
#[derive(Clone, Debug)]
pub struct RecentEntry {
    /// When it arrived here.
    pub at: Instant,
    /// What it did, described against the row's state before it (see [`describe`]).
    pub what: String,
    pub transition: Transition,
}

/// One bucket row of the live table.
#[derive(Clone, Debug)]
pub struct RowState {
    pub key: BucketKey,
    pub info: BucketInfo,
    pub last_change: Option<LastChange>,
    /// Cells changed by the latest change (see [`RowState::highlight`]).
    pub changed: Changed,
    pub changed_at: Option<Instant>,
    /// Rescan generation in which this row was last seen.
    generation: u64,
}

impl RowState {
    /// The cells to highlight at `now`: those of the latest change, for [`HIGHLIGHT_FOR`].
    pub fn highlight(&self, now: Instant) -> Changed {
        match self.changed_at {
            Some(at) if now.saturating_duration_since(at) < HIGHLIGHT_FOR => self.changed,
            _ => Changed::default(),
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

/// Port pressure of one netns over its `ip_local_port_range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    pub netns: u32,
    pub lo: u16,
    pub hi: u16,
    /// Ports of the range without any bucket.
    pub free: u32,
    /// Ports whose buckets are all fastreuse -1 / fastreuseport -1: connect() can still
    /// pick them (given a unique 4-tuple).
    pub shared: u32,
    /// Ports with a bucket in fastreuse 0/+1 or fastreuseport >= 0: connect() skips them.
    pub blocked: u32,
}

impl Pressure {
    pub fn size(&self) -> u32 {
        if self.hi < self.lo {
            0
        } else {
            u32::from(self.hi - self.lo) + 1
        }
    }
}

const PORT_FREE: u8 = 0;
const PORT_SHARED: u8 = 1;
const PORT_BLOCKED: u8 = 2;

/// Counts free / shared / blocked ports of `lo..=hi` in `netns` over `buckets`.
/// `scratch` is reused between calls (65,536 bytes once, then no allocation).
pub fn pressure<'a>(
    buckets: impl IntoIterator<Item = (&'a BucketKey, &'a BucketInfo)>,
    netns: u32,
    lo: u16,
    hi: u16,
    scratch: &mut Vec<u8>,
) -> Pressure {
    let mut p = Pressure {
        netns,
        lo,
        hi,
        free: 0,
        shared: 0,
        blocked: 0,
    };
    if hi < lo {
        return p;
    }
    scratch.clear();
    scratch.resize(usize::from(u16::MAX) + 1, PORT_FREE);
    for (key, info) in buckets {
        if key.netns != netns || key.port < lo || key.port > hi {
            continue;
        }
        let slot = &mut scratch[usize::from(key.port)];
        let state = if connect_can_share(info) {
            PORT_SHARED
        } else {
            PORT_BLOCKED
        };
        *slot = (*slot).max(state);
    }
    for &s in &scratch[usize::from(lo)..=usize::from(hi)] {
        match s {
            PORT_FREE => p.free += 1,
            PORT_SHARED => p.shared += 1,
            _ => p.blocked += 1,
        }
    }
    p
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

/// Sorts `keys` (rows of `rows`) by `sort`; `reverse` flips the whole order. Ties are
/// broken by (netns, port, l3mdev), so the order is total and deterministic.
pub fn sort_keys(
    keys: &mut [BucketKey],
    rows: &HashMap<BucketKey, RowState>,
    sort: SortKey,
    reverse: bool,
) {
    use std::cmp::Ordering;
    let base = |a: &BucketKey, b: &BucketKey| {
        (a.netns, a.port, a.l3mdev).cmp(&(b.netns, b.port, b.l3mdev))
    };
    keys.sort_unstable_by(|a, b| {
        let (ra, rb) = (rows.get(a), rows.get(b));
        let primary = match (sort, ra, rb) {
            (SortKey::Port, _, _) => (a.port, a.netns, a.l3mdev).cmp(&(b.port, b.netns, b.l3mdev)),
            (SortKey::Netns, _, _) => Ordering::Equal,
            (SortKey::Owners, Some(x), Some(y)) => y.info.owners.cmp(&x.info.owners),
            (SortKey::Fastreuse, Some(x), Some(y)) => (x.info.fastreuse, x.info.fastreuseport)
                .cmp(&(y.info.fastreuse, y.info.fastreuseport)),
            (SortKey::LastChange, Some(x), Some(y)) => match (&x.last_change, &y.last_change) {
                (Some(p), Some(q)) => q.at.cmp(&p.at),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
            _ => Ordering::Equal,
        };
        let ord = primary.then_with(|| base(a, b));
        if reverse {
            ord.reverse()
        } else {
            ord
        }
    });
}


/// What a transition did to its bucket, in words, e.g. `fastreuse -1→0 (bind)`.
/// `old` is the row's state before the transition, when known.
pub fn describe(t: &Transition, old: Option<&BucketInfo>) -> String {
    let op = t.op.as_str();
    let owners_move = |what: &str| match (old, t.after) {
        (Some(o), Some(a)) => format!("owners {}→{} ({op})", o.owners, a.owners),
        _ => format!("{what} ({op})"),
    };
    let field_move = |name: &str, old_v: Option<i8>, new_v: Option<i8>| {
        let from = t.from.or(old_v);
        let to = t.to.or(new_v);
        match (from, to) {
            (Some(f), Some(v)) => format!("{name} {}→{} ({op})", fmt_reuse(f), fmt_reuse(v)),
            (None, Some(v)) => format!("{name} →{} ({op})", fmt_reuse(v)),
            _ => format!("{name} changed ({op})"),
        }
    };
    match t.kind {
        TransitionKind::BucketCreated => match t.after {
            Some(a) => format!(
                "created {}/{} ({op})",
                fmt_reuse(a.fastreuse),
                fmt_reuse(a.fastreuseport)
            ),
            None => format!("created ({op})"),
        },
        TransitionKind::OwnerAdded => owners_move("owner added"),
        TransitionKind::OwnerRemoved => owners_move("owner removed"),
        TransitionKind::FastreuseChanged => field_move(
            "fastreuse",
            old.map(|o| o.fastreuse),
            t.after.map(|a| a.fastreuse),
        ),
        TransitionKind::FastreuseportChanged => field_move(
            "fastreuseport",
            old.map(|o| o.fastreuseport),
            t.after.map(|a| a.fastreuseport),
        ),
        TransitionKind::BucketDestroyed => format!("destroyed ({op})"),
        TransitionKind::BindFailed | TransitionKind::ConnectFailed => {
            let call = if t.kind == TransitionKind::BindFailed {
                "bind"
            } else {
                "connect"
            };
            let mut s = format!("{call} failed {}", errno_label(t.errno));
            if !t.comm.is_empty() {
                let _ = write!(s, " ({})", t.comm);
            }
            s
        }
    }
}

/// Differences between two states found by a rescan, e.g. `owners 2→1 (rescan)`.
fn describe_rescan(old: &BucketInfo, new: &BucketInfo) -> String {
    let mut parts: Vec<String> = Vec::new();
    if old.fastreuse != new.fastreuse {
        parts.push(format!(
            "fastreuse {}→{}",
            fmt_reuse(old.fastreuse),
            fmt_reuse(new.fastreuse)
        ));
    }
    if old.fastreuseport != new.fastreuseport {
        parts.push(format!(
            "fastreuseport {}→{}",
            fmt_reuse(old.fastreuseport),
            fmt_reuse(new.fastreuseport)
        ));
    }
    if old.owners != new.owners || old.owners_truncated != new.owners_truncated {
        parts.push(format!(
            "owners {}→{}",
            crate::views::fmt_owners(old),
            crate::views::fmt_owners(new)
        ));
    }
    format!("{} (rescan)", parts.join(", "))
}

/// The `ip_local_port_range` of the header netns, as last asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeState {
    Unknown,
    Known(u16, u16),
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
    rows: HashMap<BucketKey, RowState>,
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
    /// The last walk was truncated (owner counts are lower bounds).
    pub truncated: bool,
    pub scans: u64,
    pub last_scan: Option<Instant>,
    generation: u64,
}

impl TopApp {
    pub fn new(header_netns: u32, backend: String) -> TopApp {
        TopApp {
            rows: HashMap::with_capacity(1024),
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
            truncated: false,
            scans: 0,
            last_scan: None,
            generation: 0,
        }
    }

    pub fn row(&self, key: &BucketKey) -> Option<&RowState> {
        self.rows.get(key)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Recent transitions, newest first.
    pub fn recent(&self) -> impl Iterator<Item = &RecentEntry> {
        self.recent.iter().rev()
    }

    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// Applies events in order: update the row, insert on creation, remove on destruction;
    /// a failed bind/connect only records the failure as the bucket's last change.
    pub fn apply_transitions(&mut self, transitions: Vec<Transition>, now: Instant) {
        if transitions.is_empty() {
            return;
        }
        for t in transitions {
            let what = self.apply_one(&t, now);
            if self.recent.len() == RECENT_CAPACITY {
                self.recent.pop_front();
            }
            self.recent.push_back(RecentEntry {
                at: now,
                what,
                transition: t,
            });
        }
        self.view_dirty = true;
        self.update_pressure();
    }

    /// Applies one transition; returns its description.
    fn apply_one(&mut self, t: &Transition, now: Instant) -> String {
        let old = self.rows.get(&t.key).map(|r| r.info);
        let what = describe(t, old.as_ref());
        let failure = matches!(
            t.kind,
            TransitionKind::BindFailed | TransitionKind::ConnectFailed
        );
        if t.kind == TransitionKind::BucketDestroyed || (!failure && t.after.is_none()) {
            self.rows.remove(&t.key);
            return what;
        }
        let Some(after) = t.after else {
            // A failure on a port without a bucket: nothing to show in the table.
            if let Some(row) = self.rows.get_mut(&t.key) {
                row.last_change = Some(LastChange {
                    at: now,
                    what: what.clone(),
                });
            }
            return what;
        };
        let generation = self.generation;
        let row = self.rows.entry(t.key).or_insert_with(|| RowState {
            key: t.key,
            info: after,
            last_change: None,
            changed: Changed::default(),
            changed_at: None,
            generation,
        });
        let changed = Changed::between(old.as_ref(), &after);
        row.info = after;
        row.last_change = Some(LastChange {
            at: now,
            what: what.clone(),
        });
        if changed.any() {
            row.changed = changed;
            row.changed_at = Some(now);
        }
        what
    }

    /// Replaces the rows with a fresh walk: it also catches what the event stream missed
    /// (TIME-WAIT expiry, dropped events). Differences become last changes "(rescan)".
    pub fn apply_snapshot(&mut self, snap: Snapshot, now: Instant) {
        self.generation += 1;
        let generation = self.generation;
        let first = self.scans == 0;
        for b in snap.buckets {
            match self.rows.get_mut(&b.key) {
                Some(row) => {
                    let changed = Changed::between(Some(&row.info), &b.info);
                    if changed.any() {
                        row.last_change = Some(LastChange {
                            at: now,
                            what: describe_rescan(&row.info, &b.info),
                        });
                        row.changed = changed;
                        row.changed_at = Some(now);
                        row.info = b.info;
                    }
                    row.generation = generation;
                }
                None => {
                    let (last_change, changed, changed_at) = if first {
                        (None, Changed::default(), None)
                    } else {
                        (
                            Some(LastChange {
                                at: now,
                                what: "appeared (rescan)".to_owned(),
                            }),
                            Changed {
                                new: true,
                                ..Changed::default()
                            },
                            Some(now),
                        )
                    };
                    self.rows.insert(
                        b.key,
                        RowState {
                            key: b.key,
                            info: b.info,
                            last_change,
                            changed,
                            changed_at,
                            generation,
                        },
                    );
                }
            }
        }
        self.rows.retain(|_, r| r.generation == generation);
        self.truncated = snap.truncated;
        self.scans += 1;
        self.last_scan = Some(now);
        self.view_dirty = true;
        self.update_pressure();
    }

    pub fn set_port_range(&mut self, range: RangeState) {
        if self.range != range {
            self.range = range;
            self.update_pressure();
        }
    }

    fn update_pressure(&mut self) {
        self.pressure = match self.range {
            RangeState::Known(lo, hi) => Some(pressure(
                self.rows.values().map(|r| (&r.key, &r.info)),
                self.header_netns,
                lo,
                hi,
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
            self.view
                .extend(self.rows.keys().filter(|k| matches_filter(k, filter)));
            sort_keys(&mut self.view, &self.rows, self.sort, self.reverse);
            self.view_dirty = false;
        }
        self.clamp_scroll();
    }

    /// The sorted, filtered rows (call [`TopApp::refresh_view`] first).
    pub fn view(&self) -> impl Iterator<Item = &RowState> + '_ {
        self.view.iter().filter_map(|k| self.rows.get(k))
    }

    pub fn view_len(&self) -> usize {
        self.view.len()
    }

    /// The rows on screen: `page` rows from `offset`.
    pub fn visible(&self) -> impl Iterator<Item = &RowState> + '_ {
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

/// A duration as a short age: `3.2s`, `42s`, `5m03s`, `2h05m`.
pub fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 10 {
        format!("{}.{}s", s, d.subsec_millis() / 100)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures::{info, key, snap, tr}, *};
    use crate::model::Op;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }
    fn ports(app: &TopApp) -> Vec<u16> {
        app.view().map(|r| r.key.port).collect()
    }

    #[test]
    fn pressure_counts_free_shared_blocked() {
        let rows = [
            (key(1, 60000), info(-1, -1, 2)), // shared
            (key(1, 60001), info(0, -1, 1)),  // blocked (fastreuse 0)
            (key(1, 60002), info(1, -1, 1)),  // blocked (+1)
            (key(1, 60003), info(-1, 0, 1)),  // blocked (fastreuseport 0)
            (key(2, 60004), info(0, -1, 1)),  // other netns: ignored
            (key(1, 1234), info(0, -1, 1)),   // outside the range
        ];
        let mut scratch = Vec::new();
        let p = pressure(
            rows.iter().map(|(k, i)| (k, i)),
            1,
            60000,
            60009,
            &mut scratch,
        );
        assert_eq!(
            p,
            Pressure {
                netns: 1,
                lo: 60000,
                hi: 60009,
                free: 6,
                shared: 1,
                blocked: 3
            }
        );
        assert_eq!(p.size(), 10);
        // The article's setup: a one-port range.
        let p = pressure(
            rows.iter().map(|(k, i)| (k, i)),
            1,
            60000,
            60000,
            &mut scratch,
        );
        assert_eq!((p.free, p.shared, p.blocked), (0, 1, 0));
        // Whole port space, edges included.
        let edge = [
            (key(1, 0), info(0, -1, 1)),
            (key(1, 65535), info(-1, -1, 1)),
        ];
        let p = pressure(edge.iter().map(|(k, i)| (k, i)), 1, 0, 65535, &mut scratch);
        assert_eq!((p.free, p.shared, p.blocked), (65534, 1, 1));
        // Inverted range: nothing.
        let p = pressure(edge.iter().map(|(k, i)| (k, i)), 1, 10, 5, &mut scratch);
        assert_eq!((p.free, p.shared, p.blocked, p.size()), (0, 0, 0, 0));
    }

    #[test]
    fn pressure_port_with_two_vrf_buckets_is_blocked_if_any_blocks() {
        let a = BucketKey {
            netns: 1,
            l3mdev: 0,
            port: 100,
        };
        let b = BucketKey {
            netns: 1,
            l3mdev: 7,
            port: 100,
        };
        let rows = [(a, info(-1, -1, 1)), (b, info(0, -1, 1))];
        let mut scratch = Vec::new();
        let p = pressure(rows.iter().map(|(k, i)| (k, i)), 1, 100, 100, &mut scratch);
        assert_eq!((p.free, p.shared, p.blocked), (0, 0, 1));
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
        app.apply_snapshot(
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
        app.apply_transitions(
            vec![tr(
                TransitionKind::OwnerAdded,
                Op::Accept,
                key(2, 80),
                Some(info(0, -1, 2)),
            )],
            t0 + Duration::from_secs(1),
        );
        app.apply_transitions(
            vec![tr(
                TransitionKind::OwnerAdded,
                Op::Accept,
                key(1, 443),
                Some(info(1, -1, 6)),
            )],
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
        app.apply_snapshot(snap(&[(key(1, 1234), info(0, -1, 1))]), t0);
        let r = app.row(&key(1, 1234)).expect("row");
        assert_eq!(r.last_change, None, "first scan is not a change");
        assert!(!r.highlight(t0).any());

        let t1 = t0 + Duration::from_millis(100);
        app.apply_transitions(
            vec![
                tr(
                    TransitionKind::BucketCreated,
                    Op::Connect,
                    key(1, 60000),
                    Some(info(-1, -1, 1)),
                ),
                tr(
                    TransitionKind::OwnerAdded,
                    Op::Connect,
                    key(1, 60000),
                    Some(info(-1, -1, 2)),
                ),
            ],
            t1,
        );
        let r = app.row(&key(1, 60000)).expect("created");
        assert_eq!(r.info, info(-1, -1, 2));
        assert_eq!(
            r.last_change.as_ref().map(|c| c.what.as_str()),
            Some("owners 1→2 (connect)")
        );
        assert!(r.highlight(t1).owners);
        assert!(!r.highlight(t1 + HIGHLIGHT_FOR).any(), "highlight expires");

        let mut t = tr(
            TransitionKind::FastreuseChanged,
            Op::Bind,
            key(1, 60000),
            Some(info(0, -1, 3)),
        );
        t.from = Some(-1);
        t.to = Some(0);
        app.apply_transitions(vec![t], t1);
        let r = app.row(&key(1, 60000)).expect("row");
        assert_eq!(
            r.last_change.as_ref().map(|c| c.what.as_str()),
            Some("fastreuse -1→0 (bind)")
        );
        let h = r.highlight(t1);
        assert!(h.fastreuse && h.owners && !h.fastreuseport && !h.new);

        app.apply_transitions(
            vec![tr(
                TransitionKind::BucketDestroyed,
                Op::Close,
                key(1, 60000),
                None,
            )],
            t1,
        );
        assert!(app.row(&key(1, 60000)).is_none());
        assert_eq!(app.len(), 1);
        assert_eq!(app.recent_len(), 4);
        let pane: Vec<&str> = app.recent().map(|e| e.what.as_str()).collect();
        assert_eq!(
            pane,
            [
                "destroyed (close)",
                "fastreuse -1→0 (bind)",
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
        app.apply_snapshot(snap(&[(key(1, 60000), info(0, -1, 1))]), t0);
        let mut t = tr(
            TransitionKind::BindFailed,
            Op::Bind,
            key(1, 60000),
            Some(info(0, -1, 1)),
        );
        t.errno = -98;
        let mut miss = tr(TransitionKind::ConnectFailed, Op::Connect, key(1, 5), None);
        miss.errno = 99;
        app.apply_transitions(vec![t, miss], t0);
        let r = app.row(&key(1, 60000)).expect("row");
        assert_eq!(r.info, info(0, -1, 1));
        assert_eq!(
            r.last_change.as_ref().map(|c| c.what.as_str()),
            Some("bind failed EADDRINUSE (nc)")
        );
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
        app.apply_snapshot(
            snap(&[
                (key(1, 80), info(0, -1, 3)),
                (key(1, 60000), info(-1, -1, 1)),
            ]),
            t0,
        );
        let t1 = t0 + Duration::from_secs(1);
        // TIME-WAIT expiry: port 60000 vanished, port 80 lost an owner, 9000 appeared.
        let mut s = snap(&[(key(1, 80), info(0, -1, 2)), (key(1, 9000), info(0, 0, 1))]);
        s.truncated = true;
        app.apply_snapshot(s, t1);
        assert!(app.row(&key(1, 60000)).is_none());
        let r = app.row(&key(1, 80)).expect("80");
        assert_eq!(r.info.owners, 2);
        assert_eq!(
            r.last_change.as_ref().map(|c| c.what.as_str()),
            Some("owners 3→2 (rescan)")
        );
        let r = app.row(&key(1, 9000)).expect("9000");
        assert!(r.highlight(t1).new);
        assert_eq!(
            r.last_change.as_ref().map(|c| c.what.as_str()),
            Some("appeared (rescan)")
        );
        assert!(app.truncated);
        assert_eq!(app.scans, 2);
        // An unchanged rescan keeps the last change and does not re-highlight.
        app.apply_snapshot(snap(&[(key(1, 80), info(0, -1, 2))]), t1 + HIGHLIGHT_FOR);
        let r = app.row(&key(1, 80)).expect("80");
        assert_eq!(r.last_change.as_ref().map(|c| c.at), Some(t1));
        assert!(!r.highlight(t1 + HIGHLIGHT_FOR).any());
    }

    #[test]
    fn recent_ring_is_bounded_and_does_not_grow() {
        let t0 = Instant::now();
        let mut app = TopApp::new(1, String::new());
        let cap = app.recent.capacity();
        for i in 0..(RECENT_CAPACITY as u16 + 50) {
            app.apply_transitions(
                vec![tr(
                    TransitionKind::BucketCreated,
                    Op::Bind,
                    key(1, i),
                    Some(info(0, -1, 1)),
                )],
                t0,
            );
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
        app.apply_snapshot(snap(&[(key(7, 60000), info(-1, -1, 1))]), t0);
        assert_eq!(app.pressure, None, "range not known yet");
        app.set_port_range(RangeState::Known(60000, 60001));
        assert_eq!(
            app.pressure.map(|p| (p.free, p.shared, p.blocked)),
            Some((1, 1, 0))
        );
        let mut t = tr(
            TransitionKind::FastreuseChanged,
            Op::Bind,
            key(7, 60000),
            Some(info(0, -1, 2)),
        );
        t.from = Some(-1);
        t.to = Some(0);
        app.apply_transitions(vec![t], t0);
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
        app.apply_snapshot(
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
        app.apply_snapshot(snap(&rows), t0);
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
        app.apply_snapshot(snap(&rows[..5]), t0);
        app.refresh_view();
        assert_eq!((app.selected, app.offset), (4, 0));
    }

    #[test]
    fn descriptions() {
        let k = key(1, 60000);
        let created = tr(
            TransitionKind::BucketCreated,
            Op::Connect,
            k,
            Some(info(-1, -1, 1)),
        );
        assert_eq!(describe(&created, None), "created -1/-1 (connect)");
        let mut frp = tr(
            TransitionKind::FastreuseportChanged,
            Op::Listen,
            k,
            Some(info(0, 1, 1)),
        );
        assert_eq!(
            describe(&frp, Some(&info(0, -1, 1))),
            "fastreuseport -1→+1 (listen)"
        );
        frp.from = Some(0);
        frp.to = Some(1);
        assert_eq!(describe(&frp, None), "fastreuseport 0→+1 (listen)");
        let rm = tr(
            TransitionKind::OwnerRemoved,
            Op::Release,
            k,
            Some(info(0, -1, 1)),
        );
        assert_eq!(describe(&rm, Some(&info(0, -1, 2))), "owners 2→1 (release)");
        assert_eq!(describe(&rm, None), "owner removed (release)");
        let d = tr(TransitionKind::BucketDestroyed, Op::Timewait, k, None);
        assert_eq!(describe(&d, None), "destroyed (timewait)");
        assert_eq!(errno_label(99), "EADDRNOTAVAIL");
        assert_eq!(errno_label(-98), "EADDRINUSE");
        assert_eq!(errno_label(100000), "errno 100000");
        assert_eq!(
            describe_rescan(&info(0, -1, 2), &info(-1, -1, 1)),
            "fastreuse 0→-1, owners 2→1 (rescan)"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(fmt_age(Duration::from_millis(3250)), "3.2s");
        assert_eq!(fmt_age(Duration::from_secs(42)), "42s");
        assert_eq!(fmt_age(Duration::from_secs(303)), "5m03s");
        assert_eq!(fmt_age(Duration::from_secs(7500)), "2h05m");
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn arb_info() -> impl Strategy<Value = BucketInfo> {
            (-1i8..=1, -1i8..=1, 0u32..5, any::<bool>()).prop_map(|(fr, frp, owners, t)| {
                BucketInfo {
                    fastreuse: fr,
                    fastreuseport: frp,
                    owners,
                    owners_truncated: t,
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
        fn arb_transition() -> impl Strategy<Value = Transition> {
            let kinds = prop_oneof![
                Just(TransitionKind::BucketCreated),
                Just(TransitionKind::OwnerAdded),
                Just(TransitionKind::OwnerRemoved),
                Just(TransitionKind::FastreuseChanged),
                Just(TransitionKind::FastreuseportChanged),
                Just(TransitionKind::BucketDestroyed),
                Just(TransitionKind::BindFailed),
                Just(TransitionKind::ConnectFailed),
            ];
            (kinds, arb_key(), proptest::option::of(arb_info()))
                .prop_map(|(kind, k, after)| tr(kind, Op::Bind, k, after))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn pressure_partitions_the_range(
                rows in proptest::collection::vec((arb_key(), arb_info()), 0..60),
                lo in 0u16..50, len in 0u16..30,
            ) {
                let hi = lo.saturating_add(len);
                let mut scratch = Vec::new();
                let p = pressure(rows.iter().map(|(k, i)| (k, i)), 2, lo, hi, &mut scratch);
                prop_assert_eq!(p.free + p.shared + p.blocked, p.size());
                let ports_with_bucket: std::collections::HashSet<u16> = rows
                    .iter()
                    .filter(|(k, _)| k.netns == 2 && k.port >= lo && k.port <= hi)
                    .map(|(k, _)| k.port)
                    .collect();
                prop_assert_eq!(p.shared + p.blocked, ports_with_bucket.len() as u32);
            }

            #[test]
            fn a_rescan_has_the_last_word(
                first in proptest::collection::vec((arb_key(), arb_info()), 0..30),
                events in proptest::collection::vec(arb_transition(), 0..40),
                last in proptest::collection::vec((arb_key(), arb_info()), 0..30),
            ) {
                let t0 = Instant::now();
                let mut app = TopApp::new(1, String::new());
                app.apply_snapshot(snap(&first), t0);
                app.apply_transitions(events, t0);
                app.apply_snapshot(snap(&last), t0);
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
                app.apply_snapshot(snap(&rows), t0);
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
                    let owners: Vec<u32> = app.view().map(|r| r.info.owners).collect();
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
